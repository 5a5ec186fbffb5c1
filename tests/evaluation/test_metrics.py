"""Tests of mopeft_jax.evaluation.metrics (docs/evaluation.md: confusion matrix, MESS's figures)."""

import importlib.util
import logging
import math
import sys
import types

import numpy as np
import pytest

from mopeft_jax.evaluation import confusion_matrix, group_means, mean_iou, mean_of
from mopeft_jax.evaluation.metrics import segmentation_metrics


def _detectron2_confusion(pred_list, gt_list, num_classes, ignore_label=255):
    """detectron2 SemSegEvaluator.process, re-derived: a (K+1)x(K+1) [pred, gt] matrix summed
    over the images, the ignore label mapped to K."""
    k = num_classes
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in zip(pred_list, gt_list):
        gt = np.array(gt, dtype=int)
        gt[gt == ignore_label] = k
        conf += np.bincount(
            (k + 1) * np.asarray(pred).reshape(-1) + gt.reshape(-1), minlength=conf.size
        ).reshape(conf.shape)
    return conf


def _detectron2_evaluate(pred_list, gt_list, num_classes, ignore_label=255, mess=False):
    """detectron2 SemSegEvaluator's arithmetic, re-derived: per-class IoU from the top-left
    K x K block of its matrix."""
    k = num_classes
    conf = _detectron2_confusion(pred_list, gt_list, k, ignore_label)
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
    # MESSSemSegEvaluator (the default): class 2 gets IoU 0 and counts -> (1/2 + 1 + 0) / 3
    miou, iou = mean_iou(conf)
    np.testing.assert_allclose(iou, [0.5, 1.0, 0.0])
    assert miou == pytest.approx(0.5)
    assert mean_iou(conf, protocol="mess")[0] == miou
    # detectron2 since f3c1bc19: class 2 NaN and left out -> (1/2 + 1) / 2
    miou_d2, iou_d2 = mean_iou(conf, protocol="detectron2")
    np.testing.assert_allclose(iou_d2[:2], [0.5, 1.0])
    assert math.isnan(iou_d2[2])
    assert miou_d2 == pytest.approx(0.75)


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
    assert math.isnan(mean_iou(total, protocol="detectron2")[1][4]) and mean_iou(total)[1][4] == 0


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


# Rows ground truth, columns prediction. Class 2 is neither in the ground truth nor predicted;
# class 3 is predicted twice but absent from the ground truth.
CONF = np.array([[3, 1, 0, 0], [1, 2, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_segmentation_metrics_by_hand():
    # TP = (3, 2, 0, 0), GT = (4, 5, 0, 0), predicted = (4, 3, 0, 2), N = 9 pixels
    m = segmentation_metrics(CONF, classes_of_interest=[1, 2, 3])  # background 0
    iou = [3 / (4 + 4 - 3), 2 / (5 + 3 - 2), math.nan, 0.0]
    np.testing.assert_allclose(m["iou_per_class"], iou)
    assert m["miou"] == pytest.approx((0.6 + 1 / 3 + 0) / 3)
    np.testing.assert_allclose(m["acc_per_class"], [3 / 4, 2 / 5, math.nan, math.nan])
    assert m["macc"] == pytest.approx((0.75 + 0.4) / 2)
    assert m["pacc"] == pytest.approx(5 / 9)
    assert m["fwiou"] == pytest.approx(4 / 9 * 0.6 + 5 / 9 * (1 / 3))
    assert m["coi_miou"] == pytest.approx((1 / 3 + 0) / 2)  # class 2 has no IoU, 3 has 0
    assert m["coi_macc"] == pytest.approx(0.4)

    d2 = segmentation_metrics(CONF, classes_of_interest=[1, 2, 3], protocol="detectron2")
    assert d2["miou"] == pytest.approx((0.6 + 1 / 3) / 2)
    assert d2["coi_miou"] == pytest.approx(1 / 3)
    for key in ("macc", "pacc", "fwiou", "coi_macc"):
        assert d2[key] == m[key]


def test_segmentation_metrics_classes_of_interest():
    every = segmentation_metrics(CONF)  # MESS's default: every class
    assert every["coi_miou"] == every["miou"] and every["coi_macc"] == every["macc"]
    assert segmentation_metrics(CONF, classes_of_interest=(0,))["coi_miou"] == pytest.approx(0.6)
    assert math.isnan(segmentation_metrics(CONF, classes_of_interest=[2])["coi_miou"])
    assert math.isnan(segmentation_metrics(CONF, classes_of_interest=[])["coi_miou"])
    with pytest.raises(ValueError, match=r"classes_of_interest must lie in \[0, 4\), got \[1, 4\]"):
        segmentation_metrics(CONF, classes_of_interest=[1, 4])


def test_segmentation_metrics_of_an_empty_matrix():
    m = segmentation_metrics(np.zeros((3, 3), np.int64), classes_of_interest=[1, 2])
    for key in ("miou", "macc", "pacc", "fwiou", "coi_miou", "coi_macc"):
        assert math.isnan(m[key]), key
    assert np.isnan(m["iou_per_class"]).all() and np.isnan(m["acc_per_class"]).all()


def _mess_evaluator(monkeypatch, class_names, classes_of_interest):
    """MESS's own MESSSemSegEvaluator (mess-benchmark 0.2), on stubs of the detectron2 parts it
    imports: the metadata catalogue and SemSegEvaluator's constructor (detectron2 is not
    installable here; evaluate() is MESS's code, untouched)."""
    pytest.importorskip("torch")  # mess imports it to save its results
    found = importlib.util.find_spec("mess")
    if found is None:
        pytest.skip("mess-benchmark is not installed (pip install --no-deps mess-benchmark==0.2)")
    meta = types.SimpleNamespace(stuff_classes=list(class_names))
    if classes_of_interest is not None:
        meta.classes_of_interest = list(classes_of_interest)

    class SemSegEvaluator:
        def __init__(self, dataset_name, distributed=True, output_dir=None, **_):
            self._class_names = meta.stuff_classes
            self._num_classes = len(meta.stuff_classes)
            self._distributed = distributed
            self._output_dir = output_dir
            self._logger = logging.getLogger("mess")

    stubs = {
        "detectron2": types.ModuleType("detectron2"),
        "detectron2.data": types.SimpleNamespace(MetadataCatalog={"test": meta}),
        "detectron2.utils": types.ModuleType("detectron2.utils"),
        "detectron2.utils.comm": types.SimpleNamespace(
            all_gather=None, is_main_process=None, synchronize=None
        ),
        "detectron2.utils.file_io": types.SimpleNamespace(PathManager=None),
        "detectron2.evaluation": types.SimpleNamespace(SemSegEvaluator=SemSegEvaluator),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.find_spec("mess.evaluation.sem_seg_evaluation")
    module = importlib.util.module_from_spec(spec)  # not kept in sys.modules: it saw the stubs
    spec.loader.exec_module(module)
    return module.MESSSemSegEvaluator("test", distributed=False)


@pytest.mark.parametrize(
    "classes_of_interest", [None, [1, 2, 3, 4], [1, 3], [4]], ids=["all", "bg0", "two", "absent"]
)
def test_segmentation_metrics_equal_mess_evaluator(monkeypatch, classes_of_interest):
    rng = np.random.default_rng(1)
    k = 5
    preds, gts = [], []
    for _ in range(4):
        gt = rng.integers(0, k, size=(13, 17))
        gt[rng.random(gt.shape) < 0.2] = 255
        gt[gt == 4] = 3  # class 4 never in the ground truth, but predicted
        pred = np.where(
            rng.random(gt.shape) < 0.6, np.minimum(gt, k - 1), rng.integers(0, k, gt.shape)
        )
        preds.append(pred)
        gts.append(gt)
    names = [f"Class{c}" for c in range(k)]
    evaluator = _mess_evaluator(monkeypatch, names, classes_of_interest)
    evaluator._conf_matrix = _detectron2_confusion(preds, gts, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = evaluator.evaluate()["sem_seg"]

    conf = sum(confusion_matrix(p, g, k) for p, g in zip(preds, gts))
    ours = segmentation_metrics(conf, classes_of_interest=classes_of_interest)
    figures = {"mIoU": "miou", "CoI-mIoU": "coi_miou", "fwIoU": "fwiou", "mACC": "macc"}
    figures.update({"pACC": "pacc", "CoI-mACC": "coi_macc"})
    for theirs, key in figures.items():
        np.testing.assert_allclose(100 * ours[key], res[theirs], rtol=1e-12, err_msg=theirs)
    for c, name in enumerate(names):
        np.testing.assert_allclose(100 * ours["iou_per_class"][c], res[f"IoU-{name}"], rtol=1e-12)
        np.testing.assert_allclose(100 * ours["acc_per_class"][c], res[f"ACC-{name.lower()}"])
    assert res["IoU-Class4"] == 0.0 and math.isnan(res["ACC-class4"])
