"""`AutomaticMaskGenerator`: every object of an image, from a grid of point prompts.

The official ``segment_anything.SamAutomaticMaskGenerator`` in JAX, with its options under their
official names and its results (the same masks, scores and records) for the same model. Per crop
of the image (the whole image, then ``crop_n_layers`` layers of overlapping tiles): encode it,
decode a grid of single-point prompts in jitted batches of ``points_per_batch`` (3 masks each),
drop masks with a low predicted IoU or stability score or that touch the crop's inner edges,
then duplicates by box NMS. Across crops, NMS prefers masks of smaller crops; optionally small
holes and islands are removed (``min_mask_region_area``, with scipy instead of OpenCV).

Unlike the official, which upscales every mask of a batch to the image size on the host, the
stability scores and boxes are computed inside the jitted batch, and only the masks that survive
the filters and the NMS are upscaled again for output (by the same function of the same low-res
logits).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from mopeft_jax.inference.masks import (
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle,
    masks_to_boxes,
    nms,
    remove_small_regions,
    stability_score,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from mopeft_jax.inference.predictor import (
    MASK_THRESHOLD,
    SamPredictor,
    map_in_buckets,
    upscale_masks,
)
from mopeft_jax.preprocessing import apply_coords, to_rgb
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.transforms import postprocess_masks

__all__ = ["OUTPUT_MODES", "AutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@functools.partial(jax.jit, static_argnames=("input_size", "original_size", "image_size", "offset"))
def _mask_quality(
    low_res: jax.Array,
    input_size: Tuple[int, int],
    original_size: Tuple[int, int],
    image_size: int,
    offset: float,
) -> Tuple[jax.Array, jax.Array]:
    """Low-res logits ``(B, M, h, w)`` -> stability scores ``(B, M)`` and boxes ``(B, M, 4)`` of
    the masks at the crop's size (`original_size`)."""
    logits = postprocess_masks(low_res, input_size, original_size, image_size)
    return stability_score(logits, MASK_THRESHOLD, offset), masks_to_boxes(logits > MASK_THRESHOLD)


@dataclasses.dataclass
class _Masks:
    """N masks and what the records say about them, in the image's frame."""

    masks: np.ndarray  # (N, H, W) bool
    boxes: np.ndarray  # (N, 4) int, x0, y0, x1, y1 (inclusive)
    points: np.ndarray  # (N, 2) float64, the point prompt (x, y)
    iou_preds: np.ndarray  # (N,) float32
    stability: np.ndarray  # (N,) float32
    crop_boxes: np.ndarray  # (N, 4) int, x0, y0, x1, y1

    def take(self, index) -> "_Masks":
        return _Masks(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @classmethod
    def concatenate(cls, parts: Sequence["_Masks"]) -> "_Masks":
        return cls(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls))
        )


class AutomaticMaskGenerator:
    """Masks for everything in an image, as the official ``SamAutomaticMaskGenerator``.

        generator = AutomaticMaskGenerator.from_pretrained("my_run", points_per_side=16)
        records = generator.generate(image)  # (H, W, 3) uint8
        records[0]["segmentation"]           # (H, W) bool

    Args:
      config, params: the model (plain SAM or a fine-tuned one with PEFT layers).
      points_per_side: the point grid of the whole image is ``points_per_side**2`` points;
        None if `point_grids` gives the grids.
      points_per_batch: points decoded per jitted call.
      pred_iou_thresh: keep masks whose predicted IoU is above this (0: no filter).
      stability_score_thresh: keep masks whose stability score is at least this (0: no filter).
      stability_score_offset: the logit offset of the stability score.
      box_nms_thresh: box IoU above which NMS drops the lower-scored mask of a crop.
      crop_n_layers: layers of crops below the whole image; layer i has ``(2**i)**2`` crops.
      crop_nms_thresh: box IoU of the NMS across crops (which prefers smaller crops).
      crop_overlap_ratio: overlap of the first layer's crops, a fraction of the short side.
      crop_n_points_downscale_factor: layer i has ``points_per_side / factor**i`` points a side.
      point_grids: explicit grids in ``[0, 1]``, ``(n_i, 2)`` points ``(x, y)`` per layer.
      min_mask_region_area: if > 0, holes and islands of fewer pixels are removed, then box NMS
        runs again, preferring the masks this left unchanged.
      output_mode: "binary_mask" (``(H, W)`` bool), "uncompressed_rle" or "coco_rle" (COCO's
        compressed RLE; needs pycocotools).
    """

    def __init__(
        self,
        config: SamConfig,
        params,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ):
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Give exactly one of points_per_side and point_grids.")
        if points_per_side is not None:
            point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        point_grids = [np.asarray(g, np.float64) for g in point_grids]
        if len(point_grids) < crop_n_layers + 1:
            raise ValueError(
                f"point_grids has {len(point_grids)} grids; crop_n_layers={crop_n_layers} needs "
                f"one per layer, {crop_n_layers + 1}."
            )
        for i, grid in enumerate(point_grids):
            if grid.ndim != 2 or grid.shape[1] != 2 or grid.size == 0:
                raise ValueError(
                    f"point_grids[{i}] must be (n, 2) points (x, y) in [0, 1], n >= 1; got shape "
                    f"{grid.shape}."
                )
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}.")
        if output_mode == "coco_rle":
            coco_encode_rle({"size": [1, 1], "counts": [1]})  # fails now if pycocotools is absent
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be positive, got {points_per_batch}.")
        self.predictor = SamPredictor(config, params, max_prompt_batch=points_per_batch)
        self.point_grids = point_grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @classmethod
    def from_pretrained(cls, path, step=None, **options) -> "AutomaticMaskGenerator":
        """A generator for the model `mopeft_jax.load_pretrained(path, step)` reads: a converted
        SAM, a training run's folder (SAM and its trained PEFT layers and gates), or a step."""
        # mopeft_jax imports this module; its load_pretrained is looked up when first needed.
        from mopeft_jax import load_pretrained  # pylint: disable=g-import-not-at-top

        config, params = load_pretrained(path, step=step)
        return cls(config, params, **options)

    def generate(self, image) -> List[Dict[str, Any]]:
        """The masks of `image`, ``(H, W, 3)`` uint8 (grayscale and RGBA are converted).

        Returns:
          One dict per mask, with the official keys:
            segmentation: the mask as `output_mode` says, in the image's frame.
            area: its pixel count.
            bbox: its box ``[x, y, w, h]`` (x, y, w, h of the pixels it covers, w = x1 - x0).
            predicted_iou: the model's IoU prediction.
            point_coords: ``[[x, y]]``, the point prompt that produced it.
            stability_score: its stability score.
            crop_box: ``[x, y, w, h]`` of the crop it was found in.
        """
        image = to_rgb(image)
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0:
            data = self._remove_small_regions(data)
        if self.output_mode == "binary_mask":
            segmentations = list(data.masks)
        else:
            segmentations = mask_to_rle(data.masks)
            if self.output_mode == "coco_rle":
                segmentations = [coco_encode_rle(rle) for rle in segmentations]
        return [
            {
                "segmentation": segmentations[i],
                "area": int(data.masks[i].sum()),
                "bbox": box_xyxy_to_xywh(data.boxes[i]).tolist(),
                "predicted_iou": float(data.iou_preds[i]),
                "point_coords": [data.points[i].tolist()],
                "stability_score": float(data.stability[i]),
                "crop_box": box_xyxy_to_xywh(data.crop_boxes[i]).tolist(),
            }
            for i in range(len(segmentations))
        ]

    def _generate_masks(self, image: np.ndarray) -> _Masks:
        """The masks of every crop, without duplicates across crops."""
        image_size = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(
            image_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = _Masks.concatenate(
            [self._process_crop(image, box, layer) for box, layer in zip(crop_boxes, layers)]
        )
        if len(crop_boxes) > 1:
            # Of duplicates, keep the mask of the smallest crop (the official score, in float32).
            scores = np.float32(1) / box_area(data.crop_boxes).astype(np.float32)
            data = data.take(nms(data.boxes, scores, self.crop_nms_thresh))
        return data

    def _process_crop(self, image: np.ndarray, crop_box: List[int], layer: int) -> _Masks:
        """The masks of one crop that pass the filters and its box NMS, in the image's frame."""
        x0, y0, x1, y1 = crop_box
        image_h, image_w = image.shape[:2]
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        predictor = self.predictor
        predictor.set_image(crop)
        side = predictor.config.image_size
        quality = functools.partial(
            _mask_quality,
            input_size=predictor.input_size,
            original_size=crop_size,
            image_size=side,
            offset=self.stability_score_offset,
        )
        points = self.point_grids[layer] * np.asarray(crop_size)[None, ::-1]
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            stability, boxes, iou, low_res = predictor.predict_in_input_frame(
                apply_coords(batch, crop_size, side)[:, None],
                np.ones((len(batch), 1), np.int32),
                None,
                None,
                multimask_output=True,
                postprocess=quality,
            )
            m = iou.shape[1]
            flat = dict(
                low_res=low_res.reshape(-1, *low_res.shape[2:]),
                boxes=boxes.reshape(-1, 4),
                points=np.repeat(batch, m, axis=0),
                iou_preds=iou.reshape(-1),
                stability=stability.reshape(-1),
            )
            keep = self._passes_filters(flat, crop_box, (image_h, image_w))
            parts.append({k: v[keep] for k, v in flat.items()})
        candidates = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        keep = nms(candidates["boxes"], candidates["iou_preds"], self.box_nms_thresh)
        kept = {k: v[keep] for k, v in candidates.items()}
        masks = self._binary_masks(kept.pop("low_res"), crop_size)
        predictor.reset_image()
        return _Masks(
            masks=uncrop_masks(masks, crop_box, image_h, image_w),
            boxes=uncrop_boxes_xyxy(kept["boxes"], crop_box),
            points=uncrop_points(kept["points"], crop_box),
            iou_preds=kept["iou_preds"],
            stability=kept["stability"],
            crop_boxes=np.tile(np.asarray(crop_box, np.int64), (len(keep), 1)),
        )

    def _passes_filters(self, flat: dict, crop_box, image_size) -> np.ndarray:
        """Which masks of a batch pass the official filters, in the official order."""
        keep = np.ones(len(flat["iou_preds"]), bool)
        if self.pred_iou_thresh > 0.0:
            keep &= flat["iou_preds"] > self.pred_iou_thresh
        if self.stability_score_thresh > 0.0:
            keep &= flat["stability"] >= self.stability_score_thresh
        image_h, image_w = image_size
        keep &= ~is_box_near_crop_edge(flat["boxes"], crop_box, [0, 0, image_w, image_h])
        return keep

    def _binary_masks(self, low_res: np.ndarray, crop_size: Tuple[int, int]) -> np.ndarray:
        """Low-res logits ``(K, h, w)`` of the crop set in the predictor -> masks ``(K, h', w')``
        at the crop's size, upscaled in jitted batches."""
        if len(low_res) == 0:
            return np.zeros((0, *crop_size), bool)
        upscale = functools.partial(
            upscale_masks,
            input_size=self.predictor.input_size,
            original_size=crop_size,
            image_size=self.predictor.config.image_size,
            return_logits=False,
        )
        (masks,) = map_in_buckets(lambda x: (upscale(x),), [low_res], self.points_per_batch)
        return masks

    def _remove_small_regions(self, data: _Masks) -> _Masks:
        """Fills small holes and removes small islands, then drops the duplicates this made.

        As the official ``postprocess_small_regions``: NMS at the larger of the two NMS
        thresholds, preferring (score 1) the masks that needed no change.
        """
        if len(data.masks) == 0:
            return data
        masks, unchanged = [], []
        for mask in data.masks:
            mask, filled = remove_small_regions(mask, self.min_mask_region_area, "holes")
            mask, removed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(mask)
            unchanged.append(float(not (filled or removed)))
        data = dataclasses.replace(data, masks=np.stack(masks))
        data.boxes = masks_to_boxes(data.masks).astype(np.int64)
        threshold = max(self.box_nms_thresh, self.crop_nms_thresh)
        return data.take(nms(data.boxes, np.asarray(unchanged, np.float32), threshold))
