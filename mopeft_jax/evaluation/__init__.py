"""Evaluation of SAM as the MESS benchmark evaluates it (docs/evaluation.md).

Per image: resize the label so its longest side is 1024 (:func:`resize_label_longest_side`),
build one oracle prompt per 4-connected segment (:func:`oracle_prompts`), decode with SAM and
keep the first multimask output, upscale its logits to the label size, turn them into a class
map (:func:`semantic_map`) and add the image's :func:`confusion_matrix` to the dataset's. Per
dataset: :func:`mean_iou`. Across datasets and domains: :func:`mean_of`, :func:`group_means`.

The label resize and the per-segment prompt rule live one layer below, in
:mod:`mopeft_jax.preprocessing` and :mod:`mopeft_jax.segments` (:func:`segment_prompts`, shared by
the evaluation's fixed seed and the training pipeline's random generator); their names are
re-exported here.
"""

from mopeft_jax.preprocessing import preprocess_shape as longest_side_shape
from mopeft_jax.preprocessing import resize_label_longest_side
from mopeft_jax.segments import (
    FOUR_CONNECTIVITY,
    PROMPT_KINDS,
    Segment,
    connected_segments,
    interior_candidates,
    segment_box,
    segment_point,
    segment_prompts,
)

from .metrics import confusion_matrix, group_means, mean_iou, mean_of, segmentation_metrics
from .prompts import DUMMY_BOX, DUMMY_CLASS, DUMMY_POINT, oracle_prompts
from .semantic_map import semantic_map

__all__ = [
    "DUMMY_BOX",
    "DUMMY_CLASS",
    "DUMMY_POINT",
    "FOUR_CONNECTIVITY",
    "PROMPT_KINDS",
    "Segment",
    "confusion_matrix",
    "connected_segments",
    "group_means",
    "interior_candidates",
    "longest_side_shape",
    "mean_iou",
    "mean_of",
    "oracle_prompts",
    "resize_label_longest_side",
    "segment_box",
    "segment_point",
    "segment_prompts",
    "segmentation_metrics",
    "semantic_map",
]
