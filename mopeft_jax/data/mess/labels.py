"""Turning a dataset's label files into class indices, and pairing them with their images.

The mappings follow MESS's preparation scripts (``mess/prepare_datasets/prepare_*.py`` of the
``mess-benchmark`` package), value for value: what the scripts write is what MESS evaluates. Where
a script leaves a value without a class (it would crash or write a label MESS's evaluator cannot
count), the value becomes the ignore label here; :func:`~mopeft_jax.segments.check_label` then
checks that every label map holds only class indices and 255.
"""

from __future__ import annotations

import functools
import logging
import posixpath
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from mopeft_jax.data.mess.archives import Source
from mopeft_jax.data.records import Pair
from mopeft_jax.segments import IGNORE_LABEL

__all__ = ["IMAGE_SUFFIXES", "first_channel", "lut_map", "nonblack", "rgb_map", "stem_pairs"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
"""The image files :func:`stem_pairs` looks at by default."""


def lut_map(values: np.ndarray, mapping: Mapping[int, int], default: int = IGNORE_LABEL):
    """Maps integer label values through ``mapping``; values not in it become ``default``.

    Args:
      values: ``(H, W)`` integers (or bool) ``>= 0``.
      mapping: value -> class index.
      default: the result for values not in ``mapping``.

    Returns:
      ``(H, W)`` uint8.
    """
    values = np.asarray(values)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    lut = np.full(max(256, int(values.max(initial=0)) + 1), default, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[values]


def _pack(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.uint32)
    return rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]


def rgb_map(
    rgb: np.ndarray, colours: Mapping[tuple[int, int, int], int], num_classes: int
) -> np.ndarray:
    """Maps an ``(H, W, 3)`` colour-coded label to class indices, as MESS's scripts do.

    MESS replaces the colours of its table in place, one after the other (in the table's order),
    by their class index in all three channels, and keeps channel 0: so a colour that is not in
    the table keeps its red value (``(10, 50, 50)`` becomes 10, ``(0, 0, 255)`` becomes 0). A red
    value that is not a class index becomes the ignore label (255 stays 255).

    Args:
      rgb: ``(H, W, 3)`` (or more channels; the first three count) integers.
      colours: ``(r, g, b)`` -> class index, in MESS's order.
      num_classes: ``K``; red values ``>= K`` other than 255 become 255.

    Returns:
      ``(H, W)`` uint8.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"expected an RGB label image, got shape {rgb.shape}")
    code = _pack(rgb[..., :3])
    for colour, k in colours.items():
        code[code == _pack(colour)] = _pack((k, k, k))
    red = (code >> 16).astype(np.uint8)
    return lut_map(red, {k: k for k in range(num_classes)})


def stem_pairs(
    images: Source,
    image_dir: str,
    labels: Source,
    label_dir: str,
    to_label: Callable[[Image.Image], np.ndarray],
    *,
    label_name: Union[str, Callable[[str], str]] = "{stem}.png",
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    recursive: bool = False,
    group: Optional[Callable[[str], str]] = None,
    file_name: Optional[Callable[[str], str]] = None,
) -> list[Pair]:
    """Pairs every image in ``image_dir`` with the label file of the same stem.

    ``label_name`` formats the label's file name from the image's ``stem`` (a callable gets the
    stem and returns the name); with ``recursive``, an image in ``image_dir/a/b`` looks for its
    label in ``label_dir/a/b``. Images without a label are skipped (and counted in the log).
    ``to_label`` turns the decoded label image into class indices; ``group`` and ``file_name`` map
    the image's path relative to ``image_dir``.
    """
    pairs = []
    skipped = 0
    for path in images.list(image_dir, image_suffixes, recursive=recursive):
        rel = path[len(image_dir.strip("/")) + 1 :] if image_dir.strip("/") else path
        sub, base = posixpath.split(rel)
        stem = posixpath.splitext(base)[0]
        name = label_name(stem) if callable(label_name) else label_name.format(stem=stem)
        label_path = posixpath.join(label_dir, sub, name)
        if not labels.exists(label_path):
            skipped += 1
            continue
        pairs.append(
            Pair(
                key=rel,
                file_name=file_name(rel) if file_name else rel,
                read=functools.partial(_read_pair, images, path, labels, label_path, to_label),
                group=group(rel) if group else None,
            )
        )
    if skipped:
        log.info("%s: %d images in %s have no label; skipped", images.label, skipped, image_dir)
    return pairs


def _read_pair(images: Source, image_path, labels: Source, label_path, to_label):
    return images.image_bytes(image_path), to_label(labels.image(label_path))


def first_channel(image: Image.Image) -> np.ndarray:
    """The label image's values; channel 0 where a single-channel label was saved as RGB(A)."""
    array = np.asarray(image)
    return array[..., 0] if array.ndim == 3 else array


def nonblack(image: Image.Image) -> np.ndarray:
    """A binary label: 1 where the label image is not black (any colour channel > 0), else 0.

    Palette images (GIF) are judged by their colours: their indices need not put black first.
    """
    return np.asarray(image.convert("RGB")).any(axis=-1).astype(np.uint8)
