"""Confusion matrix and mIoU as detectron2's SemSegEvaluator computes them, plus averaging.

* One confusion matrix per dataset, summed over its images; mIoU is computed once from it (not a
  mean of per-image scores).
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; pixels whose label is the ignore label are left out
  entirely (neither false positives nor false negatives).
* Which classes enter the mean (``mean_iou(..., protocol=...)``):

  - ``"detectron2"`` (default, SPEC section 6): the classes present in the ground truth. A class
    never in the ground truth gets NaN and is left out, even where it was predicted. This is
    detectron2's SemSegEvaluator since commit f3c1bc19 (July 2022, "Fix semantic errors in code
    for calculating IoU metrics").
  - ``"mess"``: what ``mess/evaluation/sem_seg_evaluation.py`` (MESSSemSegEvaluator, blumenstiel/
    MESS, used by SAM-MESS's ``evaluate.py``) and detectron2 before that commit compute: a class
    that was predicted but never in the ground truth gets IoU 0 and counts in the mean; only
    classes neither in the ground truth nor predicted are NaN and left out.

Values are fractions in ``[0, 1]``; detectron2 and MESS report ``100 *`` these numbers.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["confusion_matrix", "group_means", "mean_iou", "mean_of"]

MIOU_PROTOCOLS = ("detectron2", "mess")


def confusion_matrix(
    pred, label, num_classes: int, ignore_label: Optional[int] = 255
) -> np.ndarray:
    """Confusion matrix of one prediction; matrices of several images add up.

    Args:
        pred: ``(H, W)`` (any shape, equal to ``label``'s) int predicted classes in
            ``[0, num_classes)``.
        label: same shape, int ground truth in ``[0, num_classes)`` or ``ignore_label``.
        num_classes: ``K``.
        ignore_label: pixels with this label are not counted (None: no ignore label).

    Returns:
        ``(K, K)`` int64, ``[i, j]`` = number of pixels with ground truth ``i`` predicted as
        ``j`` (rows ground truth, columns prediction; detectron2 stores the transpose with an
        extra row/column for the ignore label, which we drop).

    Raises:
        ValueError: on a shape mismatch, non-integer inputs, a prediction outside
            ``[0, K)``, or a label outside ``[0, K)`` that is not ``ignore_label``. (detectron2
            does not check this: such a label silently lands in a wrong cell of its flattened
            ``bincount``; we refuse it instead.)
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(
            f"pred and label must have the same shape, got {pred.shape} and {label.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("pred", pred), ("label", label)):
        if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    pred = pred.reshape(-1).astype(np.int64)
    label = label.reshape(-1).astype(np.int64)
    if ignore_label is not None:
        keep = label != ignore_label
        pred, label = pred[keep], label[keep]
    bad_label = (label < 0) | (label >= num_classes)
    if bad_label.any():
        raise ValueError(
            f"label values must lie in [0, {num_classes}) or equal ignore_label={ignore_label}, "
            f"got {np.unique(label[bad_label]).tolist()}"
        )
    bad_pred = (pred < 0) | (pred >= num_classes)
    if bad_pred.any():
        raise ValueError(
            f"pred values must lie in [0, {num_classes}), got {np.unique(pred[bad_pred]).tolist()}"
        )
    counts = np.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def mean_iou(confusion, *, protocol: str = "detectron2") -> Tuple[float, np.ndarray]:
    """Mean IoU from a (summed) confusion matrix.

    Args:
        confusion: ``(K, K)`` confusion matrix, rows ground truth, columns prediction
            (as :func:`confusion_matrix`).
        protocol: ``"detectron2"`` (default; the SPEC) or ``"mess"``; they differ only for
            classes predicted but absent from the ground truth (see the module docstring).

    Returns:
        ``(miou, iou_per_class)``: ``iou_per_class`` ``(K,)`` float64 with
        ``IoU_c = TP / (TP + FP + FN)`` and NaN for the classes left out of the mean
        (``"detectron2"``: absent from the ground truth; ``"mess"``: neither in the ground truth
        nor predicted, predicted-only classes are 0); ``miou`` the mean over the non-NaN entries,
        a fraction in ``[0, 1]``, NaN if there is none.
    """
    if protocol not in MIOU_PROTOCOLS:
        raise ValueError(f"protocol must be one of {MIOU_PROTOCOLS}, got {protocol!r}")
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {conf.shape}")
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    pos_gt = conf.sum(axis=1)
    pos_pred = conf.sum(axis=0)
    union = pos_gt + pos_pred - tp
    if protocol == "detectron2":
        valid = pos_gt > 0
    else:
        valid = union > 0
    iou = np.full(conf.shape[0], np.nan, dtype=np.float64)
    iou[valid] = tp[valid] / union[valid]
    miou = float(iou[valid].mean()) if valid.any() else float("nan")
    return miou, iou


def mean_of(
    results: Mapping[str, float],
    names: Optional[Iterable[str]] = None,
    *,
    skip_missing: bool = False,
) -> float:
    """Unweighted mean of some entries of ``results`` (e.g. the per-dataset mIoUs).

    Args:
        results: name -> value.
        names: the names to average; None averages all entries.
        skip_missing: leave out names absent from ``results`` instead of raising KeyError
            (e.g. a benchmark mean without a dataset that was not run).

    Returns:
        The mean, NaN if nothing is averaged. NaN values propagate.
    """
    names = list(results) if names is None else list(names)
    missing = [n for n in names if n not in results]
    if missing and not skip_missing:
        raise KeyError(f"no result for {missing}")
    values = [float(results[n]) for n in names if n in results]
    return float(np.mean(values)) if values else float("nan")


def group_means(
    results: Mapping[str, float],
    groups: Mapping[str, Sequence[str]],
    *,
    skip_missing: bool = False,
) -> Dict[str, float]:
    """Per-group unweighted means, e.g. per MESS domain: ``{group: mean_of(results, names)}``.

    Args:
        results: name -> value.
        groups: group -> names of its members.
        skip_missing: as in :func:`mean_of`.
    """
    return {g: mean_of(results, names, skip_missing=skip_missing) for g, names in groups.items()}
