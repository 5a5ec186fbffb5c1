"""Label maps, their connected segments and the one-prompt-per-segment rule.

A label map is ``(H, W)`` integers: class indices ``0 .. K-1`` and :data:`IGNORE_LABEL` (255)
for pixels that no loss, prompt or metric counts. This module is the single implementation of
"one prompt per connected segment", below both the data pipeline (prompts sampled from the
ground truth with the pipeline's own random generator, :func:`segment_prompts`) and the
evaluation (oracle prompts, :func:`mopeft_jax.evaluation.oracle_prompts`).

Semantics (checked against the MESS authors' SAM evaluation, blumenstiel/SAM-MESS,
``model/visual_prompts.py``):

* every label value except the ignore label(s) is a class, the background included;
* the segments of a class are the 4-connected components of ``label == c``
  (``scipy.ndimage.label`` with its default cross-shaped structure, so diagonal neighbours
  are separate segments);
* segments with fewer than ``min_pixels`` pixels are dropped;
* the rest are sorted largest first and cut to ``max_prompts``.

Tie-break (a deliberate, documented choice): segments of equal size keep their enumeration
order, i.e. increasing class value, then scipy's component number (raster order of the
component's first pixel). The reference uses ``np.argsort(sizes)[::-1]`` with NumPy's default,
unstable sort, whose order among equal sizes depends on the NumPy version and CPU, so it cannot
be reproduced exactly; ours is deterministic everywhere.

* box: ``cv2.boundingRect`` semantics, ``(x, y, x + w, y + h)`` = (min column, min row,
  max column + 1, max row + 1);
* point: one positive point drawn uniformly among the segment pixels whose Euclidean (L2)
  distance to the nearest non-segment pixel, with the image border counted as non-segment
  (distance transform of the zero-padded mask), exceeds ``max / k`` (``k = 1.7``, the RITM
  rule the reference uses). The comparison is done exactly on squared integer distances, so a
  pixel whose distance equals ``max / k`` mathematically is never a candidate.

Only numpy and scipy are used.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

__all__ = [
    "FOUR_CONNECTIVITY",
    "IGNORE_LABEL",
    "PROMPT_KINDS",
    "Segment",
    "check_label",
    "check_prompt_kind",
    "connected_segments",
    "interior_candidates",
    "segment_box",
    "segment_point",
    "segment_prompts",
]

IGNORE_LABEL = 255
"""Label value of pixels that losses, prompts and metrics ignore (one definition for the project)."""

#: The 4-connectivity structure (a cross) used for ``scipy.ndimage.label``.
FOUR_CONNECTIVITY = ndimage.generate_binary_structure(2, 1)

#: The prompt kinds understood by :func:`segment_prompts` and ``oracle_prompts``.
PROMPT_KINDS = ("box", "point")

IgnoreLabel = Union[int, Sequence[int], None]


@dataclasses.dataclass(frozen=True)
class Segment:
    """One 4-connected segment of one class of a label map.

    Attributes:
        class_id: the label value of the segment.
        size: its number of pixels.
        slices: ``(rows, cols)`` slices of its bounding box in the label map.
        mask: ``(h, w)`` bool, the segment inside its bounding box
            (``h = rows.stop - rows.start``, ``w = cols.stop - cols.start``).
    """

    class_id: int
    size: int
    slices: Tuple[slice, slice]
    mask: np.ndarray

    @property
    def box(self) -> np.ndarray:
        """``(4,)`` int64 box ``x0, y0, x1, y1`` (exclusive end, as ``cv2.boundingRect``)."""
        return segment_box(self)

    def full_mask(self, shape: Tuple[int, int]) -> np.ndarray:
        """The segment as an ``(H, W)`` bool mask of the label map of shape ``shape``."""
        out = np.zeros(shape, dtype=bool)
        out[self.slices] = self.mask
        return out


def check_label(
    label,
    *,
    shape: Optional[Tuple[int, ...]] = None,
    num_classes: Optional[int] = None,
    ignore_label: IgnoreLabel = IGNORE_LABEL,
    name: str = "label",
) -> np.ndarray:
    """Returns ``label`` as a 2-D integer array (bool as 0/1), or raises ValueError naming ``name``.

    Args:
        label: ``(H, W)`` (or ``(H, W, 1)``) class indices.
        shape: the image's shape, whose ``(H, W)`` the label must have; None to skip.
        num_classes: if given, every value must be a class index ``< num_classes`` or an ignore
            label.
        ignore_label: the ignore label(s) accepted besides class indices.
        name: how the message names the label (e.g. its file).
    """
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (H, W) array of class indices, got an array of shape {label.shape}"
        )
    if label.dtype == bool:
        label = label.astype(np.int64)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {label.dtype}")
    if shape is not None and label.shape != tuple(shape[:2]):
        raise ValueError(
            f"{name} of shape {label.shape} does not match the image of shape {tuple(shape)}: "
            "they must have the same height and width"
        )
    if num_classes is not None:
        ignored = np.isin(label, list(_ignore_set(ignore_label)))
        bad = ((label < 0) | (label >= num_classes)) & ~ignored
        if bad.any():
            values = np.unique(label[bad])[:10]
            raise ValueError(
                f"{name}: label values {values.tolist()} are neither a class index "
                f"(< {num_classes}) nor the ignore label {ignore_label}"
            )
    return label


def check_prompt_kind(kind) -> str:
    """Returns ``kind`` if it is one of :data:`PROMPT_KINDS`, else raises ValueError."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"kind must be one of {PROMPT_KINDS}, got {kind!r}")
    return kind


def _ignore_set(ignore_label: IgnoreLabel) -> frozenset:
    if ignore_label is None:
        return frozenset()
    if isinstance(ignore_label, (int, np.integer)):
        return frozenset([int(ignore_label)])
    return frozenset(int(v) for v in ignore_label)


def connected_segments(
    label,
    *,
    ignore_label: IgnoreLabel = IGNORE_LABEL,
    min_pixels: int = 10,
    max_segments: Optional[int] = None,
) -> List[Segment]:
    """The 4-connected segments of every class of ``label``, largest first.

    Args:
        label: ``(H, W)`` integer label map.
        ignore_label: a label value (or a sequence of them, or None) that is never a segment.
        min_pixels: segments with fewer pixels are dropped.
        max_segments: keep at most this many (the largest); None keeps all.

    Returns:
        A list of :class:`Segment`, sorted by decreasing size; ties keep the enumeration order
        (increasing class value, then scipy's component number).

    Raises:
        ValueError: if ``label`` is not 2-D or not integer, or the limits are invalid.
    """
    label = check_label(label)
    if min_pixels < 0:
        raise ValueError(f"min_pixels must be >= 0, got {min_pixels}")
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"max_segments (max_prompts) must be >= 1 or None, got {max_segments}")
    ignore = _ignore_set(ignore_label)

    # Each class is labelled inside its own bounding box, all of which one find_objects pass
    # over the label map gives (values shifted to start at 1). Components are numbered in
    # raster order inside the box, the order they have in the whole map; on 1024 x 1024
    # synthetic labels this takes half the time of labelling every class on the whole map.
    found = []  # (size, class, bbox in the map, component map of the class box, bbox in it, number)
    low = int(label.min()) if label.size else 0
    boxes = ndimage.find_objects(np.subtract(label, low - 1, dtype=np.int64)) if label.size else []
    for offset, box in enumerate(boxes):
        c = low + offset
        if box is None or c in ignore:
            continue
        components, n = ndimage.label(label[box] == c, structure=FOUR_CONNECTIVITY)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        top, left = box[0].start, box[1].start
        for index, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
            size = int(sizes[index])
            if size >= min_pixels:
                slices = (
                    slice(rows.start + top, rows.stop + top),
                    slice(cols.start + left, cols.stop + left),
                )
                found.append((size, c, slices, components, (rows, cols), index))

    # Stable sort on decreasing size: ties keep the enumeration order.
    order = sorted(range(len(found)), key=lambda i: -found[i][0])
    if max_segments is not None:
        order = order[:max_segments]
    segments = []
    for i in order:
        size, c, slices, components, local, index = found[i]
        segments.append(Segment(c, size, slices, components[local] == index))
    return segments


def segment_box(segment: Segment) -> np.ndarray:
    """The box of a segment, ``(4,)`` int64 ``x0, y0, x1, y1``.

    ``cv2.boundingRect`` semantics: ``(x, y, x + w, y + h)`` where ``x, y`` are the minimum column
    and row, so ``x1 = max column + 1`` and ``y1 = max row + 1``.
    """
    rows, cols = segment.slices
    return np.array([cols.start, rows.start, cols.stop, rows.stop], dtype=np.int64)


def interior_candidates(mask, k: float = 1.7) -> np.ndarray:
    """The interior-point candidates of a mask.

    Args:
        mask: ``(H, W)`` bool mask with at least one True pixel.
        k: divisor of the maximum distance.

    Returns:
        ``(M, 2)`` int64 ``(row, col)`` indices of the pixels whose exact L2 distance transform
        of the zero-padded mask (distance to the nearest False pixel, the image border counting
        as False) exceeds its maximum divided by ``k``; row-major order, as ``np.argwhere``.
        Computed exactly on squared distances (integers), so ties are never candidates.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"mask must be a 2-D bool array with a True pixel, got shape {mask.shape}")
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    # Squared distances to lattice points are integers: compare them exactly,
    # d > max / k  <=>  d^2 * k^2 > max^2  with k as an exact fraction.
    d2 = np.rint(dist * dist).astype(np.int64)
    frac = Fraction(str(k)).limit_denominator(10**6)
    inner = d2 * (frac.numerator**2) > int(d2.max()) * (frac.denominator**2)
    return np.argwhere(inner)


def segment_point(segment: Segment, rng: np.random.Generator, *, k: float = 1.7) -> np.ndarray:
    """One positive interior point of a segment, ``(2,)`` int64 ``x, y`` (x is the column).

    The point is drawn uniformly (one ``rng.integers`` call) among the segment pixels where the
    exact L2 distance transform of the zero-padded segment mask exceeds its maximum divided by
    ``k`` (candidates enumerated in row-major order).

    Args:
        segment: the segment.
        rng: a ``numpy.random.Generator``.
        k: the divisor of the maximum distance (1.7 as in RITM / SAM-MESS); must be > 1 so that
            the candidate set is never empty.
    """
    if not k > 1:
        raise ValueError(f"k must be > 1, got {k}")
    candidates = interior_candidates(segment.mask, k)
    row, col = candidates[int(rng.integers(0, len(candidates)))]
    rows, cols = segment.slices
    return np.array([cols.start + col, rows.start + row], dtype=np.int64)


def segment_prompts(
    label,
    kind: str,
    rng: Optional[np.random.Generator] = None,
    *,
    ignore_label: IgnoreLabel = IGNORE_LABEL,
    min_pixels: int = 10,
    max_prompts: Optional[int] = 100,
    k: float = 1.7,
) -> Tuple[np.ndarray, np.ndarray]:
    """One prompt per 4-connected segment of ``label``, largest segment first.

    This is the shared implementation behind ``oracle_prompts`` (evaluation, fixed seed) and
    the prompt sampling of training (pass the pipeline's own generator as ``rng``). Unlike
    ``oracle_prompts`` it returns zero prompts for an image without segments.

    Args:
        label: ``(H, W)`` integer label map; prompts are integer pixel indices of it.
        kind: ``"box"`` or ``"point"``.
        rng: ``numpy.random.Generator`` for the point draws (only used, and then required,
            for ``kind="point"``). One integer is drawn per kept segment, in output order.
        ignore_label: label value(s) never prompted (int, sequence or None).
        min_pixels: minimum segment size in pixels.
        max_prompts: at most this many prompts (the largest segments); None for no cap.
        k: interior-point divisor, see :func:`segment_point`.

    Returns:
        ``(prompts, classes)``: prompts ``(N, 4)`` int64 ``x0, y0, x1, y1`` for boxes or
        ``(N, 2)`` int64 ``x, y`` for points; classes ``(N,)`` int64 label values.

    Raises:
        ValueError: for an unknown ``kind``, a non-2-D or non-integer label, invalid limits,
            or ``kind="point"`` without ``rng``.
    """
    kind = check_prompt_kind(kind)
    if kind == "point" and rng is None:
        raise ValueError("kind='point' needs a numpy.random.Generator rng")
    segments = connected_segments(
        label, ignore_label=ignore_label, min_pixels=min_pixels, max_segments=max_prompts
    )
    width = 4 if kind == "box" else 2
    prompts = np.zeros((len(segments), width), dtype=np.int64)
    classes = np.array([s.class_id for s in segments], dtype=np.int64)
    for i, segment in enumerate(segments):
        prompts[i] = segment_box(segment) if kind == "box" else segment_point(segment, rng, k=k)
    return prompts, classes
