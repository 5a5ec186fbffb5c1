"""Tests of mopeft_jax.evaluation.metrics (SPEC section 6: confusion matrix, detectron2 mIoU)."""

import math

import numpy as np
import pytest

from mopeft_jax.evaluation import confusion_matrix, group_means, mean_iou, mean_of


def _detectron2_evaluate(pred_list, gt_list, num_classes, ignore_label=255, mess=False):
    """detectron2 SemSegEvaluator's arithmetic, re-derived: a (K+1)x(K+1) [pred, gt] matrix with
    the ignore label mapped to K, then per-class IoU from its top-left K x K block."""
    k = num_classes
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in zip(pred_list, gt_list):
        gt = np.array(gt, dtype=int)
        gt[gt == ignore_label] = k
        conf += np.bincount(
            (k + 1) * np.asarray(pred).reshape(-1) + gt.reshape(-1), minlength=conf.size
        ).reshape(conf.shape)
    iou = np.full(k, np.nan)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(float)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    union = pos_gt + pos_pred - tp
    valid = (pos_gt + pos_pred > 0) if mess else np.logical_and(pos_gt > 0, union > 0)
    iou[valid] = tp[valid] / union[valid]
    return np.sum(iou[valid]) / np.sum(valid), iou


GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 255, 1, 1],
        [2, 2, 255, 1],
    ]
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 2],  # the prediction under the ignore pixel (0) is not counted
        [2, 0, 3, 1],  # the prediction 3 under an ignore pixel is not counted either
    ]
)


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, GT, num_classes=4)
    # rows ground truth, columns prediction; ignore pixels (1,1) and (2,2) dropped.
    # gt 0 at (0,0)->0, (0,1)->1, (1,0)->0               : row 0 = [2, 1, 0, 0]
    # gt 1 at (0,2)->1, (0,3)->1, (1,2)->1, (1,3)->2, (2,3)->1 : row 1 = [0, 4, 1, 0]
    # gt 2 at (2,0)->2, (2,1)->0                          : row 2 = [1, 0, 1, 0]
    # gt 3 nowhere                                        : row 3 = 0
    expected = np.array([[2, 1, 0, 0], [0, 4, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(conf, expected)
    assert conf.dtype == np.int64 and conf.sum() == GT.size - 2


def test_mean_iou_by_hand_absent_class_is_nan_and_excluded():
    conf = confusion_matrix(PRED, GT, num_classes=4)
    miou, iou = mean_iou(conf)
    # IoU_0 = 2 / (3 + 3 - 2) = 2/4; IoU_1 = 4 / (5 + 5 - 4) = 4/6; IoU_2 = 1 / (2 + 2 - 1) = 1/3
    np.testing.assert_allclose(iou[:3], [0.5, 4 / 6, 1 / 3])
    assert math.isnan(iou[3])  # class 3: never in the ground truth, never predicted (counted)
    assert miou == pytest.approx((0.5 + 4 / 6 + 1 / 3) / 3)


def test_predicted_but_absent_class():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])  # class 2 predicted, absent from the ground truth
    conf = confusion_matrix(pred, gt, 3)
    miou, iou = mean_iou(conf)
    # detectron2 (SPEC): IoU_0 = 1 / 2, IoU_1 = 1, class 2 NaN and left out -> 0.75
    np.testing.assert_allclose(iou[:2], [0.5, 1.0])
    assert math.isnan(iou[2])
    assert miou == pytest.approx(0.75)
    # MESSSemSegEvaluator: class 2 gets IoU 0 and counts -> 0.5
    miou_mess, iou_mess = mean_iou(conf, protocol="mess")
    np.testing.assert_allclose(iou_mess, [0.5, 1.0, 0.0])
    assert miou_mess == pytest.approx(0.5)


def test_background_is_a_class_like_any_other():
    gt = np.array([[0, 0, 0, 1]])
    pred = np.array([[0, 0, 1, 1]])
    miou, iou = mean_iou(confusion_matrix(pred, gt, 2))
    # background IoU 2/3, foreground 1/2
    np.testing.assert_allclose(iou, [2 / 3, 0.5])
    assert miou == pytest.approx((2 / 3 + 0.5) / 2)


def test_confusion_adds_up_and_matches_detectron2_arithmetic():
    rng = np.random.default_rng(0)
    k = 5
    preds, gts = [], []
    total = np.zeros((k, k), dtype=np.int64)
    for _ in range(6):
        gt = rng.integers(0, k, size=(9, 11))
        gt[rng.random(gt.shape) < 0.15] = 255
        gt[gt == 4] = 3  # class 4 never in the ground truth...
        pred = rng.integers(0, k, size=gt.shape)  # ...but predicted
        preds.append(pred)
        gts.append(gt)
        total += confusion_matrix(pred, gt, k)
    # one matrix per dataset = the matrix of all pixels at once
    np.testing.assert_array_equal(total, confusion_matrix(np.stack(preds), np.stack(gts), k))
    for mess in (False, True):
        miou, iou = mean_iou(total, protocol="mess" if mess else "detectron2")
        ref_miou, ref_iou = _detectron2_evaluate(preds, gts, k, mess=mess)
        np.testing.assert_allclose(iou, ref_iou)
        assert miou == pytest.approx(ref_miou)
    assert math.isnan(mean_iou(total)[1][4]) and mean_iou(total, protocol="mess")[1][4] == 0.0


def test_mean_over_dataset_is_not_mean_over_images():
    # image A: perfect on a 1-pixel class-1 object; image B: a 3-pixel class-1 object missed
    conf_a = confusion_matrix(np.array([[0, 1]]), np.array([[0, 1]]), 2)
    conf_b = confusion_matrix(np.array([[0, 0, 0, 0]]), np.array([[0, 1, 1, 1]]), 2)
    miou, iou = mean_iou(conf_a + conf_b)
    # total: gt0 = 2 px both right; gt1 = 4 px, 1 right, 3 predicted 0
    # IoU_0 = 2 / (2 + 5 - 2) = 0.4, IoU_1 = 1 / (4 + 1 - 1) = 0.25
    np.testing.assert_allclose(iou, [0.4, 0.25])
    per_image = (mean_iou(conf_a)[0] + mean_iou(conf_b)[0]) / 2
    assert miou == pytest.approx(0.325) and per_image != pytest.approx(miou)


def test_ignore_label_none_and_custom():
    gt = np.array([0, 1, 2])
    pred = np.array([0, 1, 1])
    np.testing.assert_array_equal(
        confusion_matrix(pred, gt, 3, ignore_label=2), [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    )
    np.testing.assert_array_equal(
        confusion_matrix(pred, gt, 3, ignore_label=None), [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    )


def test_empty_matrix_gives_nan():
    miou, iou = mean_iou(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(miou) and np.isnan(iou).all()


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(
        ValueError,
        match=r"label values must lie in \[0, 3\) or equal ignore_label=255, got \[3, 7\]",
    ):
        confusion_matrix(np.zeros(4, int), np.array([0, 3, 7, 255]), 3)
    with pytest.raises(ValueError, match=r"pred values must lie in \[0, 3\), got \[-1, 3\]"):
        confusion_matrix(np.array([0, -1, 3]), np.zeros(3, int), 3)
    with pytest.raises(ValueError, match="integer dtype"):
        confusion_matrix(np.zeros(3), np.zeros(3, int), 3)
    with pytest.raises(ValueError, match="square"):
        mean_iou(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="protocol must be one of"):
        mean_iou(np.eye(2), protocol="coco")


def test_mean_of_and_group_means():
    results = {"a": 0.5, "b": 0.25, "c": 1.0, "d": 0.0}
    assert mean_of(results) == pytest.approx(0.4375)
    assert mean_of(results, ["a", "c"]) == pytest.approx(0.75)
    with pytest.raises(KeyError, match="e"):
        mean_of(results, ["a", "e"])
    assert mean_of(results, ["a", "e"], skip_missing=True) == pytest.approx(0.5)
    assert math.isnan(mean_of({}, []))
    assert group_means(results, {"x": ["a", "b"], "y": ["c", "d"]}) == pytest.approx(
        {"x": 0.375, "y": 0.5}
    )
