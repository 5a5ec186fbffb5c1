"""Mask utilities of SAM's automatic mask generator: point grids, crops, scores, boxes, NMS, RLE;
and masks drawn over an image for a person to look at (:func:`overlay_masks`).

The semantics are those of ``segment_anything.utils.amg`` and of the torchvision ops the official
generator calls; every function says which one it reproduces. :func:`stability_score` and
:func:`masks_to_boxes` take numpy or jax arrays (they run inside the generator's jitted batches);
the rest is host-side numpy. Connected components use ``scipy.ndimage`` instead of OpenCV.
"""

from __future__ import annotations

import colorsys
import itertools
import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "EIGHT_CONNECTIVITY",
    "area_from_rle",
    "box_area",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle",
    "masks_to_boxes",
    "nms",
    "overlay_masks",
    "remove_small_regions",
    "rle_to_mask",
    "stability_score",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]

#: The 8-connectivity structure (a full 3x3 square) of ``cv2.connectedComponentsWithStats(m, 8)``.
EIGHT_CONNECTIVITY = np.ones((3, 3), bool)


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n**2, 2)`` points ``(x, y)`` in ``[0, 1]``, the centres of an ``n x n`` grid of cells.

    Row-major: x varies fastest, as the official ``build_point_grid``.
    """
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    x, y = np.meshgrid(side, side, indexing="xy")
    return np.stack([x, y], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> List[np.ndarray]:
    """The point grid of each crop layer ``i = 0..n_layers``: ``int(n / scale**i)`` per side."""
    sides = [int(n_per_side / (scale_per_layer**i)) for i in range(n_layers + 1)]
    if min(sides) < 1:
        raise ValueError(
            f"{n_per_side} points per side downscaled by {scale_per_layer} per layer leave "
            f"{sides[-1]} points per side in crop layer {n_layers}; use fewer crop layers or a "
            "smaller downscale factor"
        )
    return [build_point_grid(n) for n in sides]


def generate_crop_boxes(
    image_size: Tuple[int, int], n_layers: int, overlap_ratio: float
) -> Tuple[List[List[int]], List[int]]:
    """The crops of the image, as the official ``generate_crop_boxes``.

    Layer 0 is the whole image; layer ``i >= 1`` tiles it with ``2**i x 2**i`` crops that overlap
    by ``int(overlap_ratio * short_side * 2 / 2**i)`` pixels.

    Args:
      image_size: ``(H, W)``.
      n_layers: crop layers below the whole image.
      overlap_ratio: overlap of the first layer's crops, as a fraction of the short side.

    Returns:
      ``(crop_boxes, layer_idxs)``: ``[x0, y0, x1, y1]`` boxes (ints) and the layer of each.
    """
    im_h, im_w = image_size
    short_side = min(im_h, im_w)
    crop_boxes, layer_idxs = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n_per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = int(math.ceil((overlap * (n_per_side - 1) + im_w) / n_per_side))
        crop_h = int(math.ceil((overlap * (n_per_side - 1) + im_h) / n_per_side))
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for x0, y0 in itertools.product(x0s, y0s):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(layer)
    return crop_boxes, layer_idxs


def stability_score(logits, mask_threshold: float, offset: float):
    """IoU of the masks thresholded at ``mask_threshold + offset`` and ``- offset``.

    The first is inside the second, so the IoU is a ratio of pixel counts: ``(...)`` float32 for
    logits ``(..., H, W)``, NaN where even the lower threshold leaves the mask empty.
    Numpy or jax arrays (traceable).
    """
    xp = logits.__array_namespace__()
    inner = xp.sum(logits > (mask_threshold + offset), axis=(-2, -1), dtype=xp.int32)
    outer = xp.sum(logits > (mask_threshold - offset), axis=(-2, -1), dtype=xp.int32)
    # float32 like the official (torch's int32 / int32); counts below 2**24 are exact.
    return xp.astype(inner, xp.float32) / xp.astype(outer, xp.float32)


def masks_to_boxes(masks):
    """Boxes ``(..., 4)`` int32 ``x0, y0, x1, y1`` around binary masks ``(..., H, W)``.

    The corners are the first and last rows/columns that hold a pixel (inclusive, unlike the
    half-open crop boxes); an empty mask gets ``[0, 0, 0, 0]``. As the official
    ``batched_mask_to_box``. Numpy or jax arrays (traceable).
    """
    xp = masks.__array_namespace__()
    rows = xp.any(masks, axis=-1)  # (..., H)
    cols = xp.any(masks, axis=-2)  # (..., W)

    def first_and_last(present):
        n = present.shape[-1]
        first = xp.argmax(present, axis=-1)
        last = n - 1 - xp.argmax(xp.flip(present, axis=-1), axis=-1)
        return first, last

    (y0, y1), (x0, x1) = first_and_last(rows), first_and_last(cols)
    boxes = xp.astype(xp.stack([x0, y0, x1, y1], axis=-1), xp.int32)
    return xp.where(xp.any(rows, axis=-1)[..., None], boxes, xp.zeros_like(boxes))


def box_area(boxes) -> np.ndarray:
    """Areas ``(N,)`` of boxes ``(N, 4)`` as ``x0, y0, x1, y1``: ``(x1 - x0) * (y1 - y0)``."""
    boxes = np.asarray(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as torchvision's ``nms`` (and ``batched_nms`` of one class).

    Boxes are visited by decreasing score, ties in input order (a stable sort); a box is kept
    unless a kept box overlaps it with an IoU strictly above ``iou_threshold``. IoUs are computed
    in float32 as torchvision's CPU kernel does and compared to the threshold in float64; a box of
    zero area has an IoU of NaN with a box of zero area, which suppresses nothing.

    Args:
      boxes: ``(N, 4)`` as ``x0, y0, x1, y1``.
      scores: ``(N,)``.
      iou_threshold: the IoU above which the lower-scored box goes.

    Returns:
      ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if suppressed[i]:
            continue
        keep.append(i)
        width = np.maximum(np.float32(0), np.minimum(x1[i], x1) - np.maximum(x0[i], x0))
        height = np.maximum(np.float32(0), np.minimum(y1[i], y1) - np.maximum(y0[i], y0))
        inter = width * height
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas - inter)
        suppressed |= iou.astype(np.float64) > iou_threshold
    return np.asarray(keep, np.int64)


def is_box_near_crop_edge(
    boxes, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> np.ndarray:
    """``(N,)`` bool: boxes ``(N, 4)`` in the crop's frame with a side within ``atol`` pixels of
    an edge of the crop that is not an edge of the image (``orig_box``).

    Such masks are likely cut by the crop; the official generator drops them.
    """
    boxes = uncrop_boxes_xyxy(boxes, crop_box).astype(np.float32)
    near_crop = np.abs(boxes - np.asarray(crop_box, np.float32)) <= atol
    near_image = np.abs(boxes - np.asarray(orig_box, np.float32)) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box) -> np.ndarray:
    """A box ``x0, y0, x1, y1`` -> ``x0, y0, w, h`` (COCO's bbox)."""
    x0, y0, x1, y1 = np.asarray(box)
    return np.asarray([x0, y0, x1 - x0, y1 - y0])


def uncrop_boxes_xyxy(boxes, crop_box: Sequence[int]) -> np.ndarray:
    """Boxes ``(..., 4)`` from the crop's frame to the image's."""
    x0, y0 = crop_box[:2]
    return np.asarray(boxes) + np.asarray([x0, y0, x0, y0])


def uncrop_points(points, crop_box: Sequence[int]) -> np.ndarray:
    """Points ``(..., 2)`` as ``(x, y)`` from the crop's frame to the image's."""
    x0, y0 = crop_box[:2]
    return np.asarray(points) + np.asarray([x0, y0])


def uncrop_masks(masks, crop_box: Sequence[int], orig_h: int, orig_w: int) -> np.ndarray:
    """Masks ``(N, h, w)`` of a crop -> ``(N, H, W)`` of the image, zero outside the crop."""
    x0, y0, x1, y1 = crop_box
    masks = np.asarray(masks)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = ((0, 0), (y0, orig_h - y1), (x0, orig_w - x1))
    return np.pad(masks, pad)


def mask_to_rle(masks) -> List[Dict[str, Any]]:
    """Binary masks ``(N, H, W)`` -> uncompressed RLEs ``{"size": [H, W], "counts": [...]}``.

    COCO's layout (as the official ``mask_to_rle_pytorch``): pixels in column-major order,
    alternating run lengths starting with a run of zeros (0 if the first pixel is set).
    """
    masks = np.asarray(masks, bool)
    out = []
    for mask in masks:
        h, w = mask.shape
        flat = mask.ravel(order="F")
        changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        counts = np.diff(np.concatenate([[0], changes, [h * w]])).tolist()
        out.append({"size": [h, w], "counts": ([0] if flat[0] else []) + counts})
    return out


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """An uncompressed RLE (see :func:`mask_to_rle`) -> the binary mask ``(H, W)``."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, not to its size {h} x {w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: Dict[str, Any]) -> int:
    """Pixels set in an uncompressed RLE: the sum of its odd runs."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    """An uncompressed RLE -> COCO's compressed RLE (``counts`` a string), with pycocotools."""
    try:
        from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError(
            "output_mode='coco_rle' needs pycocotools: `pip install pycocotools`, or use "
            "'uncompressed_rle' or 'binary_mask'"
        ) from e
    h, w = rle["size"]
    encoded = mask_utils.frPyObjects(rle, h, w)
    encoded["counts"] = encoded["counts"].decode("utf-8")  # a str serialises to JSON
    return encoded


def remove_small_regions(mask, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fills small holes (``mode="holes"``) or removes small islands (``"islands"``) of a mask.

    As the official ``remove_small_regions``: regions are 8-connected components; a region of
    fewer than ``area_thresh`` pixels is small; if every island is small, the largest stays (the
    first of equal ones in raster order, as OpenCV numbers its components). In "holes" mode the
    background around the mask is a region like any other hole.

    Returns:
      ``(mask, changed)``: the ``(H, W)`` bool mask and whether any region was small.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, bool)
    holes = mode == "holes"
    regions, n = ndimage.label(mask ^ holes, structure=EIGHT_CONNECTIVITY)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        fill = np.concatenate([[0], small])
    else:
        fill = np.setdiff1d(np.arange(1, n + 1), small)
        if fill.size == 0:
            fill = np.asarray([np.argmax(sizes) + 1])
    return np.isin(regions, fill), True


def overlay_masks(image: np.ndarray, masks, alpha: float = 0.5) -> np.ndarray:
    """Masks ``(N, H, W)`` bool drawn over an image ``(H, W, 3)`` uint8, each in its own colour.

    Larger masks are drawn first, so that the smaller ones (often parts) stay visible; each mask
    blends its colour in with weight `alpha` and gets a one-pixel outline in full colour.

    Returns:
      ``(H, W, 3)`` uint8.
    """
    masks = np.asarray(masks, bool).reshape(-1, *image.shape[:2])
    # A fixed, well-separated palette: the golden-angle walk around the hue circle.
    hues = (np.arange(len(masks)) * 0.618034) % 1.0
    out = image.astype(np.float32)
    for i in np.argsort([-m.sum() for m in masks], kind="stable"):
        colour = 255 * np.asarray(colorsys.hsv_to_rgb(hues[i], 0.8, 1.0), np.float32)
        mask = masks[i]
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        out[mask & ~ndimage.binary_erosion(mask)] = colour
    return out.round().astype(np.uint8)
