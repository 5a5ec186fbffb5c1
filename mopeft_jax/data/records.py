"""The examples every segmentation builder writes (MESS and folder), and how they are encoded.

Every builder writes the same :func:`features`:

* ``image``: ``uint8 (H, W, 3)``, stored encoded: the downloaded JPEG/PNG bytes where they are
  RGB already, else PNG; or, where a benchmark evaluates re-saved JPEGs, those JPEG bytes;
* ``label``: ``uint8 (H, W)`` class indices, :data:`~mopeft_jax.segments.IGNORE_LABEL` (255)
  for ignored pixels;
* ``file_name``: where the image comes from (plus ``_<tile>`` for tiled images).

A builder finds :class:`Pair` s (an image and its label, read lazily) and turns each into
examples with :func:`encode_example`. Images are handed to ``tensorflow_datasets`` as encoded
bytes because encoding a numpy array there calls TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import posixpath
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageFile

from mopeft_jax.preprocessing import to_rgb
from mopeft_jax.segments import IGNORE_LABEL, check_label

__all__ = [
    "ManualDataError",
    "Pair",
    "SizeMismatchError",
    "decode_image",
    "encode_example",
    "features",
    "tiles",
]

_PNG_COMPRESS_LEVEL = 4  # images re-encoded as PNG: fast enough for 1024 px tiles, still small


class ManualDataError(FileNotFoundError):
    """The files a builder reads lack what it needs (or they lack expected content)."""


class SizeMismatchError(ValueError):
    """An image and its label differ in size (a corrupt pair of a third-party download)."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """One image and its label map, read lazily.

    Attributes:
      key: unique within its split.
      file_name: stored as the example's ``file_name`` (tiles get ``_<index>`` appended).
      read: returns ``(image, label)``: the image as encoded bytes, a PIL image or an
        ``(H, W, 3)`` uint8 array; the label as an ``(H, W)`` integer array of class indices and
        255 (ignore).
      group: examples of one group land on the same side when a dev split is carved (frames of
        one video sequence, tiles of one image); defaults to ``key``.
    """

    key: str
    file_name: str
    read: Callable[[], tuple[Any, np.ndarray]]
    group: Optional[str] = None


def features() -> tfds.features.FeaturesDict:
    """The features of every segmentation builder (MESS and folder)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "label": tfds.features.Tensor(
                shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
            ),
            "file_name": tfds.features.Text(),
        }
    )


@contextlib.contextmanager
def _trusted_decoding(allow_truncated: bool):
    # Aerial tiles (iSAID, Potsdam) exceed PIL's decompression-bomb guard; the data is trusted.
    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated or old[1]
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


def decode_image(data: bytes, *, allow_truncated: bool = False) -> Image.Image:
    """The decoded (loaded) image of encoded ``data``, in the mode it is stored in.

    Args:
      data: the file's bytes.
      allow_truncated: decode a truncated file as far as it goes (PIL's
        ``ImageFile.LOAD_TRUNCATED_IMAGES``, which MESS sets for MHP v1) instead of raising.
    """
    with _trusted_decoding(allow_truncated):
        image = Image.open(io.BytesIO(data))
        image.load()
    return image


def _pil_rgb(image) -> Image.Image:
    """A PIL image in mode RGB, converted as PIL does (what MESS's ``convert('RGB')`` gives)."""
    if isinstance(image, (bytes, bytearray)):
        image = decode_image(bytes(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(to_rgb(image))


def _rgb_array(image) -> np.ndarray:
    return to_rgb(np.asarray(_pil_rgb(image)))


def _save(image: Image.Image, image_format: str) -> bytes:
    """``image`` encoded; JPEG at PIL's default settings (quality 75), as MESS re-saves images."""
    buf = io.BytesIO()
    if image_format == "PNG":
        image.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    else:
        image.save(buf, format=image_format)
    return buf.getvalue()


def _encode_image(image, resave_jpeg: bool) -> tuple[bytes, tuple[int, int]]:
    """``(encoded bytes, (H, W))``; downloaded RGB JPEG/PNG bytes are kept unless re-saved."""
    if isinstance(image, (bytes, bytearray)) and not resave_jpeg:
        with _trusted_decoding(False):
            probe = Image.open(io.BytesIO(image))
        if probe.mode == "RGB" and probe.format in ("JPEG", "PNG"):
            return bytes(image), (probe.height, probe.width)
    rgb = _pil_rgb(image)
    return _save(rgb, "JPEG" if resave_jpeg else "PNG"), (rgb.height, rgb.width)


def tiles(array: np.ndarray, size: int, pad_value: int) -> list[np.ndarray]:
    """Non-overlapping ``size x size`` tiles, row-major, the ragged border padded (as MESS).

    Args:
      array: ``(H, W)`` or ``(H, W, C)``.
      size: the tile side.
      pad_value: the value of the padding (MESS: 0 for images, 255 for labels).
    """
    h, w = array.shape[:2]
    out = []
    for y in range(0, h, size):
        for x in range(0, w, size):
            tile = array[y : y + size, x : x + size]
            if tile.shape[:2] != (size, size):
                padded = np.full((size, size) + array.shape[2:], pad_value, array.dtype)
                padded[: tile.shape[0], : tile.shape[1]] = tile
                tile = padded
            out.append(tile)
    return out


def _check_sizes(pair: Pair, image_shape, label: np.ndarray) -> None:
    if tuple(image_shape) != label.shape:
        raise SizeMismatchError(
            f"{pair.file_name}: image is {tuple(image_shape)} but label is {label.shape}"
        )


def encode_example(
    pair: Pair,
    num_classes: int,
    tile_size: Optional[int] = None,
    *,
    resave_jpeg: bool = False,
) -> Iterator[tuple[str, dict[str, Union[bytes, np.ndarray, str]]]]:
    """Reads a pair and yields its ``(key, example)`` tuples (one per tile when tiling).

    Args:
      pair: the image and label.
      num_classes: label values must be ``< num_classes`` or 255.
      tile_size: cut image and label into tiles of this side (:func:`tiles`; image padded with
        0, label with 255); None keeps them whole.
      resave_jpeg: store the image (or each tile) as PIL saves it as JPEG at its default quality
        (75), from the image converted to RGB; what MESS's preparation does for some datasets,
        whose evaluation then reads these JPEGs.

    Raises:
      SizeMismatchError: image and label differ in size.
      ValueError: a label value that is neither a class index nor 255.
    """
    image, label = pair.read()
    label = check_label(label, num_classes=num_classes, name=pair.file_name).astype(np.uint8)
    if tile_size is None:
        encoded, shape = _encode_image(image, resave_jpeg)
        _check_sizes(pair, shape, label)
        yield pair.key, {"image": encoded, "label": label, "file_name": pair.file_name}
        return
    array = _rgb_array(image)
    _check_sizes(pair, array.shape[:2], label)
    image_format, suffix = ("JPEG", ".jpg") if resave_jpeg else ("PNG", ".png")
    stem = posixpath.splitext(pair.file_name)[0]
    image_tiles = tiles(array, tile_size, 0)
    label_tiles = tiles(label, tile_size, IGNORE_LABEL)
    for i, (img, lab) in enumerate(zip(image_tiles, label_tiles)):
        example = {
            "image": _save(Image.fromarray(img), image_format),
            "label": lab,
            "file_name": f"{stem}_{i}{suffix}",
        }
        yield f"{pair.key}_{i}", example
