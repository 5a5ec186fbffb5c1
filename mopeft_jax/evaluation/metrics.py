"""Confusion matrix and the figures MESS reports from it, plus averaging across datasets.

* One confusion matrix per dataset, summed over its images; every figure is computed once from it
  (not a mean of per-image scores), as detectron2's SemSegEvaluator and MESS's
  MESSSemSegEvaluator (``mess/evaluation/sem_seg_evaluation.py`` of the ``mess-benchmark``
  package, which produced MESS's leaderboard) do.
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; pixels whose label is the ignore label are left out
  entirely (neither false positives nor false negatives).
* Which classes enter the mean IoU (``protocol=``):

  - ``"mess"`` (default): MESSSemSegEvaluator, and detectron2 before its commit f3c1bc19: a
    class that was predicted but never in the ground truth gets IoU 0 and counts in the mean;
    only classes neither in the ground truth nor predicted are NaN and left out.
  - ``"detectron2"``: detectron2's SemSegEvaluator since commit f3c1bc19 (July 2022, "Fix
    semantic errors in code for calculating IoU metrics"): only the classes present in the
    ground truth; a class never in the ground truth is NaN and left out, even where predicted.

  The two differ only where a class is predicted but absent from the ground truth; MESS's
  published numbers use ``"mess"``.
* :func:`segmentation_metrics` adds MESS's other figures: mean class accuracy, pixel accuracy,
  frequency-weighted IoU and the mean IoU over the classes of interest (CoI-mIoU).

Values are fractions in ``[0, 1]``; detectron2 and MESS report ``100 *`` these numbers.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["confusion_matrix", "group_means", "mean_iou", "mean_of", "segmentation_metrics"]

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


def _square(confusion) -> np.ndarray:
    conf = np.asarray(confusion)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {conf.shape}")
    return conf.astype(np.float64)


def mean_iou(confusion, *, protocol: str = "mess") -> Tuple[float, np.ndarray]:
    """Mean IoU from a (summed) confusion matrix.

    Args:
        confusion: ``(K, K)`` confusion matrix, rows ground truth, columns prediction
            (as :func:`confusion_matrix`).
        protocol: ``"mess"`` (default; MESS's evaluator) or ``"detectron2"``; they differ only for
            classes predicted but absent from the ground truth (see the module docstring).

    Returns:
        ``(miou, iou_per_class)``: ``iou_per_class`` ``(K,)`` float64 with
        ``IoU_c = TP / (TP + FP + FN)`` and NaN for the classes left out of the mean
        (``"mess"``: neither in the ground truth nor predicted, predicted-only classes are 0;
        ``"detectron2"``: absent from the ground truth); ``miou`` the mean over the non-NaN
        entries, a fraction in ``[0, 1]``, NaN if there is none.
    """
    if protocol not in MIOU_PROTOCOLS:
        raise ValueError(f"protocol must be one of {MIOU_PROTOCOLS}, got {protocol!r}")
    conf = _square(confusion)
    tp = np.diag(conf)
    pos_gt = conf.sum(axis=1)
    pos_pred = conf.sum(axis=0)
    union = pos_gt + pos_pred - tp
    valid = union > 0 if protocol == "mess" else pos_gt > 0
    iou = np.full(conf.shape[0], np.nan, dtype=np.float64)
    iou[valid] = tp[valid] / union[valid]
    return _mean(iou[valid]), iou


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def segmentation_metrics(
    confusion,
    *,
    classes_of_interest: Optional[Iterable[int]] = None,
    protocol: str = "mess",
) -> Dict[str, object]:
    """Every figure MESS's evaluator reports, from one (summed) confusion matrix.

    As MESSSemSegEvaluator.evaluate (``mess-benchmark`` 0.2), with ``TP_c`` the diagonal,
    ``GT_c`` the row sums (pixels of class ``c`` in the ground truth) and ``N = sum_c GT_c``:

    * ``miou``, ``iou_per_class``: :func:`mean_iou` with ``protocol``.
    * ``acc_per_class``: ``TP_c / GT_c``, NaN where ``GT_c = 0``; ``macc``: their mean over the
      classes in the ground truth.
    * ``pacc``: ``sum_c TP_c / N``.
    * ``fwiou``: ``sum_c (GT_c / N) IoU_c`` over the classes in the ground truth.
    * ``coi_miou``: the mean of the non-NaN ``iou_per_class`` over ``classes_of_interest``;
      ``coi_macc`` likewise of ``acc_per_class``.

    Args:
        confusion: ``(K, K)`` confusion matrix, rows ground truth, columns prediction.
        classes_of_interest: the classes CoI-mIoU averages over (MESS registers every class but
            the background for most datasets, FloodNet's flooded classes only, and every class
            where there is no background: ``MessSpec.classes_of_interest``); None: every class,
            MESS's default, which makes ``coi_miou`` equal ``miou``.
        protocol: as in :func:`mean_iou` (mACC, pACC and fwIoU do not depend on it).

    Returns:
        ``{"miou", "iou_per_class", "macc", "acc_per_class", "pacc", "fwiou", "coi_miou",
        "coi_macc"}``: floats (fractions in ``[0, 1]``; NaN where nothing enters a mean, e.g. an
        empty matrix or no class of interest present; MESS's evaluator gives an fwIoU of 0 for
        an empty matrix) and ``(K,)`` float64 arrays.
    """
    conf = _square(confusion)
    k = conf.shape[0]
    miou, iou = mean_iou(conf, protocol=protocol)
    tp = np.diag(conf)
    pos_gt = conf.sum(axis=1)
    total = pos_gt.sum()
    present = pos_gt > 0
    acc = np.full(k, np.nan, dtype=np.float64)
    acc[present] = tp[present] / pos_gt[present]
    coi = np.zeros(k, dtype=bool)
    if classes_of_interest is None:
        coi[:] = True
    else:
        indices = np.asarray(list(classes_of_interest), dtype=np.int64)
        if ((indices < 0) | (indices >= k)).any():
            raise ValueError(f"classes_of_interest must lie in [0, {k}), got {indices.tolist()}")
        coi[indices] = True
    return {
        "miou": miou,
        "iou_per_class": iou,
        "macc": _mean(acc[present]),
        "acc_per_class": acc,
        "pacc": float(tp.sum() / total) if total else float("nan"),
        "fwiou": float(np.sum(iou[present] * pos_gt[present]) / total) if total else float("nan"),
        "coi_miou": _mean(iou[coi & ~np.isnan(iou)]),
        "coi_macc": _mean(acc[coi & present]),
    }


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
