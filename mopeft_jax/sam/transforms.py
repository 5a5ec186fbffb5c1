"""SAM's pre- and post-processing as pure, jit-compatible functions.

Mirrors `segment_anything.utils.transforms.ResizeLongestSide` and
`Sam.preprocess` / `Sam.postprocess_masks`. Sizes are Python ints (static under jit).

The host-side preprocessing that is bit-identical to the official one (PIL's uint8 resize) is
`mopeft_jax.preprocessing`; this module's `preprocess` resizes in float inside a jitted
function (for exported or fully on-device pipelines) and differs from it by PIL's uint8
rounding. Prompt coordinates are host data: `apply_coords` and `apply_boxes` are the numpy ones
of `mopeft_jax.preprocessing`.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

from mopeft_jax.preprocessing import (
    PIXEL_MEAN,
    PIXEL_STD,
    apply_boxes,
    apply_coords,
    check_pixel_range,
    preprocess_shape,
    rgb_channels,
)

__all__ = [
    "apply_boxes",
    "apply_coords",
    "normalize_and_pad",
    "postprocess_masks",
    "preprocess",
    "preprocess_shape",
    "resize_longest_side",
]


def resize_longest_side(image: jax.Array, long_side: int = 1024) -> jax.Array:
    """Bilinear, antialiased resize of (H, W, C) (or (B, H, W, C)) to longest side `long_side`.

    The official pipeline resizes uint8 images with PIL's antialiased bilinear filter;
    this is the same filter in float, so values differ from PIL's by its uint8 rounding.
    """
    h, w = image.shape[-3:-1]
    new_h, new_w = preprocess_shape(h, w, long_side)
    shape = (*image.shape[:-3], new_h, new_w, image.shape[-1])
    return jax.image.resize(image.astype(jnp.float32), shape, "linear", antialias=True)


def normalize_and_pad(
    image: jax.Array,
    image_size: int = 1024,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> jax.Array:
    """`Sam.preprocess`: RGB in [0, 255] (..., H, W, 3) -> normalised, zero-padded (..., S, S, 3)."""
    h, w = image.shape[-3:-1]
    if h > image_size or w > image_size:
        raise ValueError(
            f"Image of size {h}x{w} is larger than the model input {image_size}; "
            "resize it first with resize_longest_side."
        )
    x = (image.astype(jnp.float32) - jnp.asarray(pixel_mean)) / jnp.asarray(pixel_std)
    pad = [(0, 0)] * (x.ndim - 3) + [(0, image_size - h), (0, image_size - w), (0, 0)]
    return jnp.pad(x, pad)


def preprocess(
    image: jax.Array,
    image_size: int = 1024,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> jax.Array:
    """An RGB image (H, W, 3) in [0, 255] -> the encoder input (S, S, 3).

    Grayscale (H, W) or (H, W, 1) and RGBA (H, W, 4) images are converted to RGB. Concrete
    (not traced) images are checked to hold pixel values in [0, 255]: a float image in [0, 1]
    or a 16-bit one is refused (`mopeft_jax.preprocessing.check_pixel_range`).
    """
    if not isinstance(image, jax.core.Tracer):
        check_pixel_range(image)
    image = rgb_channels(jnp.asarray(image))
    return normalize_and_pad(
        resize_longest_side(image, image_size), image_size, pixel_mean, pixel_std
    )


def _bilinear(masks: jax.Array, size: Tuple[int, int]) -> jax.Array:
    """`F.interpolate(mode="bilinear", align_corners=False)` on the last two axes."""
    return jax.image.resize(masks, (*masks.shape[:-2], *size), "linear", antialias=False)


def postprocess_masks(
    masks: jax.Array,
    input_size: Tuple[int, int],
    original_size: Tuple[int, int],
    image_size: int = 1024,
) -> jax.Array:
    """`Sam.postprocess_masks`: low-res logits (..., h, w) -> logits (..., H, W) of the original.

    Upscales to the padded input size, crops the padding (the resized image occupies
    `input_size`) and resizes to `original_size`, bilinearly.
    """
    masks = _bilinear(masks.astype(jnp.float32), (image_size, image_size))
    masks = masks[..., : input_size[0], : input_size[1]]
    return _bilinear(masks, tuple(original_size))
