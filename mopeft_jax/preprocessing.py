"""SAM's host-side preprocessing, in numpy: what images, labels and prompts go through before the model.

The official pipeline (``segment_anything``'s ``SamPredictor.set_image`` and ``Sam.preprocess``):

1. ``ResizeLongestSide.apply_image`` resizes the uint8 RGB image so that its longest side is the
   model's input side S (1024) with torchvision's ``resize`` of a PIL image, which calls
   ``PIL.Image.resize(..., BILINEAR)``: antialiased when downscaling, rounded to uint8.
   :func:`resize_image` does exactly that, so preprocessing here is bit-identical to the official.
2. ``Sam.preprocess`` normalises with the pixel mean/std and zero-pads at the bottom and right to
   S x S (:func:`normalize_and_pad`).

:func:`preprocess_image` does both. Prompts given in the original image's pixels move to the
resized frame with :func:`apply_coords` / :func:`apply_boxes`; labels are resized like the image,
nearest-neighbour, with :func:`resize_label_longest_side` (as MESS does before its oracle prompts).

The pixel statistics are defined here, once; ``SamConfig`` takes them as its defaults. The jit-side
versions of the same steps (a float resize, mask post-processing) are in
:mod:`mopeft_jax.sam.transforms`. Only numpy and PIL are used.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "apply_boxes",
    "apply_coords",
    "check_pixel_range",
    "normalize_and_pad",
    "preprocess_image",
    "preprocess_shape",
    "resize_image",
    "resize_label_longest_side",
    "rgb_channels",
    "to_rgb",
]

# SAM normalises RGB pixels in [0, 255] with ImageNet statistics.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def preprocess_shape(height: int, width: int, long_side: int = 1024) -> Tuple[int, int]:
    """Size ``(H', W')`` of an image resized so that its longest side is ``long_side``.

    As ``ResizeLongestSide.get_preprocess_shape``: ``scale = long_side / max(H, W)``,
    ``new = int(old * scale + 0.5)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {(height, width)}")
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def rgb_channels(image):
    """``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> ``(H, W, 3)``, any dtype.

    Grayscale is replicated to three channels (PIL's ``L`` -> ``RGB``), RGBA loses its alpha
    (PIL's ``RGBA`` -> ``RGB``, no compositing). Only indexing is used, so numpy and jax arrays
    (traced ones too) both work.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {tuple(image.shape)}"
        )
    return image[..., (0, 0, 0)] if image.shape[-1] == 1 else image[..., :3]


def check_pixel_range(image) -> None:
    """Raises ValueError unless the (concrete) pixel values are RGB in [0, 255].

    Floats in [0, 255] pass (a float pipeline's own resizing); a float image in [0, 1], which
    would come out almost black, or values beyond 255 (a 16-bit image, which would come out
    over-bright) get an error with the conversion to apply.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8 or image.size == 0:
        return
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"image must be numeric, got dtype {image.dtype}")
    values = image.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"image of dtype {image.dtype} has NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(image.dtype, np.floating) and 0 < high <= 1.0 and low >= 0:
        raise ValueError(
            f"image of dtype {image.dtype} has values in [{low:g}, {high:g}]: SAM expects 8-bit "
            "RGB in [0, 255]; convert it with (image * 255).round().astype(np.uint8)"
        )
    if low < 0 or high > 255:
        raise ValueError(
            f"image of dtype {image.dtype} has values in [{low:g}, {high:g}]: SAM expects 8-bit "
            "RGB in [0, 255]; convert it to uint8 first (a 16-bit image: "
            "(image // 257).astype(np.uint8))"
        )


def to_rgb(image) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 RGB, the input SAM's preprocessing starts from.

    Channels as :func:`rgb_channels`, values as :func:`check_pixel_range`. A non-uint8 array is
    accepted only when it converts to uint8 losslessly (integers in [0, 255]), so that no image
    is silently rescaled or rounded.

    Raises:
        ValueError: for another shape, an empty image, or values that are not 8-bit integers,
            with the conversion to apply.
    """
    image = rgb_channels(np.asarray(image))
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    check_pixel_range(image)
    if image.dtype != np.uint8 and np.any(image != np.round(image)):
        raise ValueError(
            f"image of dtype {image.dtype} has fractional values: SAM's preprocessing starts "
            "from 8-bit RGB, integers in [0, 255]; round it and convert it to uint8 first"
        )
    return np.ascontiguousarray(image.astype(np.uint8))


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of an ``(H, W, 3)`` uint8 image to ``size = (new_h, new_w)``.

    Exactly ``ResizeLongestSide.apply_image``: torchvision's ``resize`` of a PIL image is
    ``PIL.Image.resize((w, h), BILINEAR)`` (antialiased, uint8 rounding).
    """
    new_h, new_w = size
    if (new_h, new_w) == image.shape[:2]:
        return image  # PIL's resize to the same size is the identity.
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def normalize_and_pad(
    image: np.ndarray,
    image_size: int,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> np.ndarray:
    """``Sam.preprocess``: RGB in [0, 255] ``(H, W, 3)`` -> normalised, zero-padded ``(S, S, 3)``.

    SAM pads after normalising, so the padding is 0 in the normalised space.
    """
    h, w = image.shape[:2]
    if h > image_size or w > image_size:
        raise ValueError(
            f"image of size {h}x{w} is larger than the model input {image_size}; resize it first"
        )
    mean = np.asarray(pixel_mean, np.float32)
    std = np.asarray(pixel_std, np.float32)
    out = np.zeros((image_size, image_size, 3), np.float32)
    # In place, without temporaries: the same float32 operations, a third faster at 1024.
    inside = out[:h, :w]
    np.subtract(image, mean, out=inside, dtype=np.float32)
    np.divide(inside, std, out=inside)
    return out


def preprocess_image(
    image,
    image_size: int = 1024,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> Tuple[np.ndarray, Tuple[int, int]]:
    """An image as ``SamPredictor.set_image`` prepares it for the encoder.

    Args:
      image: ``(H, W, 3)`` uint8 RGB; grayscale and RGBA are converted (:func:`to_rgb`).
      image_size: the model's input side S.
      pixel_mean, pixel_std: the model's normalisation (``SamConfig.pixel_mean/std``).

    Returns:
      ``(pixels, input_size)``: ``(S, S, 3)`` float32 encoder input and ``(H', W')``, the size of
      the resized image inside it.
    """
    image = to_rgb(image)
    input_size = preprocess_shape(image.shape[0], image.shape[1], image_size)
    if min(input_size) < 1:
        raise ValueError(
            f"image of shape {image.shape} resized to a longest side of {image_size} would be "
            f"{input_size[0]}x{input_size[1]} pixels; it is too elongated"
        )
    resized = resize_image(image, input_size)
    return normalize_and_pad(resized, image_size, pixel_mean, pixel_std), input_size


def apply_coords(coords, original_size: Tuple[int, int], long_side: int = 1024) -> np.ndarray:
    """Point coordinates ``(..., 2)`` as ``(x, y)`` in the original image -> the resized frame.

    As ``ResizeLongestSide.apply_coords``: x scales by ``W'/W``, y by ``H'/H``.
    """
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    scale = np.asarray([new_w / old_w, new_h / old_h], np.float32)
    return np.asarray(coords, np.float32) * scale


def apply_boxes(boxes, original_size: Tuple[int, int], long_side: int = 1024) -> np.ndarray:
    """Boxes ``(..., 4)`` as ``x0, y0, x1, y1`` in the original image -> the resized frame."""
    boxes = np.asarray(boxes, np.float32)
    corners = apply_coords(boxes.reshape(*boxes.shape[:-1], 2, 2), original_size, long_side)
    return corners.reshape(boxes.shape)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices of a nearest-neighbour resize from ``n_in`` to ``n_out`` samples.

    Output sample ``i`` reads input ``floor(c_i)`` with ``c_i = s/2 + i*s``, ``s = n_in/n_out``,
    the centre of the output pixel mapped back, accumulated step by step in float64 exactly as
    Pillow's NEAREST resize does (so the result is bit-identical to
    ``PIL.Image.resize(..., NEAREST)``, which detectron2 uses for uint8 labels).
    """
    step = n_in / n_out
    coords = np.add.accumulate(np.concatenate([[step * 0.5], np.full(n_out - 1, step)]))
    return np.minimum(coords.astype(np.int64), n_in - 1)


def resize_label_longest_side(label, target: int = 1024) -> np.ndarray:
    """Nearest-neighbour resize of a label map so that its longest side is ``target``.

    Args:
        label: ``(H, W)`` integer label map.
        target: the new length of the longest side.

    Returns:
        ``(H', W')`` array of the same dtype, ``(H', W') = preprocess_shape(H, W, target)``, the
        size of the image resized for the model (``label`` itself if that is its size). Every
        output value is a value of the input.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(
            f"label must be a 2-D (H, W) array of class indices, got an array of shape {label.shape}"
        )
    h, w = label.shape
    new_h, new_w = preprocess_shape(h, w, target)
    if (new_h, new_w) == (h, w):
        return label  # the nearest-neighbour resize to the same size is the identity
    return label[_nearest_indices(h, new_h)[:, None], _nearest_indices(w, new_w)[None, :]]
