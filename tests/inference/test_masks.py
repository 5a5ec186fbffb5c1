"""The mask utilities reproduce segment_anything.utils.amg (and torchvision's NMS, OpenCV's
connected components, pycocotools' RLE) value for value."""

import builtins

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from official_reference import batched_nms
from segment_anything.utils import amg

from mopeft_jax.inference import masks as ops


@pytest.mark.parametrize("n, layers, scale", [(32, 0, 1), (7, 2, 2), (10, 2, 3)])
def test_point_grids(n, layers, scale):
    expected = amg.build_all_layer_point_grids(n, layers, scale)
    actual = ops.build_all_layer_point_grids(n, layers, scale)
    assert len(actual) == len(expected) == layers + 1
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def test_point_grids_that_run_out_of_points_are_rejected():
    with pytest.raises(ValueError, match="leave 0 points per side in crop layer 3"):
        ops.build_all_layer_point_grids(10, 3, 3)


@pytest.mark.parametrize(
    "size, layers, overlap",
    [((1024, 1024), 0, 512 / 1500), ((480, 640), 2, 512 / 1500), ((333, 97), 3, 0.25)],
)
def test_crop_boxes(size, layers, overlap):
    assert ops.generate_crop_boxes(size, layers, overlap) == amg.generate_crop_boxes(
        size, layers, overlap
    )


def random_logits(shape, seed=0):
    """Smooth logits (..., H, W) whose masks are blobs, some empty, some full."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[: shape[-2], : shape[-1]]
    centres = rng.rand(*shape[:-2], 2, 1, 1) * np.asarray(shape[-2:])[:, None, None]
    dist = np.hypot(y - centres[..., 0, :, :], x - centres[..., 1, :, :])
    radius = rng.uniform(-5, 30, (*shape[:-2], 1, 1))
    return ((radius - dist) / 4).astype(np.float32)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")
@pytest.mark.parametrize("offset", [1.0, 0.25])
def test_stability_score_numpy_and_jitted(offset):
    logits = random_logits((4, 3, 50, 70))
    expected = amg.calculate_stability_score(torch.from_numpy(logits), 0.0, offset).numpy()
    assert np.isnan(expected).any() and (expected > 0).any()  # empty masks give 0 / 0
    np.testing.assert_array_equal(ops.stability_score(logits, 0.0, offset), expected)
    jitted = jax.jit(ops.stability_score, static_argnums=(1, 2))(jnp.asarray(logits), 0.0, offset)
    assert jitted.dtype == jnp.float32
    np.testing.assert_array_equal(jitted, expected)


def test_masks_to_boxes_numpy_and_jitted():
    masks = random_logits((5, 3, 40, 60), seed=1) > 0
    masks[0, 0] = False
    masks[0, 1] = True
    masks[0, 2] = False
    masks[0, 2, 7, 9] = True
    expected = amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(ops.masks_to_boxes(masks), expected)
    np.testing.assert_array_equal(jax.jit(ops.masks_to_boxes)(masks), expected)
    np.testing.assert_array_equal(expected[0], [[0, 0, 0, 0], [0, 0, 59, 39], [9, 7, 9, 7]])


def test_crop_edge_and_uncrop():
    rng = np.random.RandomState(2)
    boxes = rng.randint(0, 300, (50, 4))
    boxes[:, 2:] += boxes[:, :2]
    crop_box, orig_box = [100, 30, 420, 400], [0, 0, 640, 400]
    expected = amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop_box, orig_box).numpy()
    assert 0 < expected.sum() < len(boxes)
    np.testing.assert_array_equal(ops.is_box_near_crop_edge(boxes, crop_box, orig_box), expected)
    np.testing.assert_array_equal(
        ops.uncrop_boxes_xyxy(boxes, crop_box),
        amg.uncrop_boxes_xyxy(torch.from_numpy(boxes), crop_box).numpy(),
    )
    points = rng.rand(7, 2) * 100
    np.testing.assert_array_equal(
        ops.uncrop_points(points, crop_box),
        amg.uncrop_points(torch.from_numpy(points), crop_box).numpy(),
    )
    masks = rng.rand(3, 370, 320) > 0.5
    np.testing.assert_array_equal(
        ops.uncrop_masks(masks, crop_box, 400, 640),
        amg.uncrop_masks(torch.from_numpy(masks), crop_box, 400, 640).numpy(),
    )
    np.testing.assert_array_equal(ops.box_xyxy_to_xywh(np.asarray([3, 4, 10, 20])), [3, 4, 7, 16])


def test_rle_round_trip_equals_the_official():
    masks = random_logits((6, 23, 31), seed=3) > 0
    masks[0] = True  # starts with a set pixel: counts begin with 0
    masks[1] = False
    expected = amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    actual = ops.mask_to_rle(masks)
    assert actual == expected
    assert actual[0]["counts"][0] == 0 and actual[1]["counts"] == [23 * 31]
    for rle, mask in zip(actual, masks):
        np.testing.assert_array_equal(ops.rle_to_mask(rle), mask)
        assert ops.area_from_rle(rle) == amg.area_from_rle(rle) == mask.sum()


def test_rle_with_wrong_counts_is_rejected():
    with pytest.raises(ValueError, match="RLE counts sum to 5, not to its size 2 x 3"):
        ops.rle_to_mask({"size": [2, 3], "counts": [2, 3]})


def test_coco_rle_equals_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    masks = random_logits((3, 40, 50), seed=4) > 0
    for rle, mask in zip(ops.mask_to_rle(masks), masks):
        coco = ops.coco_encode_rle(rle)
        assert coco == amg.coco_encode_rle(rle)
        assert isinstance(coco["counts"], str)
        np.testing.assert_array_equal(mask_utils.decode({**coco, "counts": coco["counts"]}), mask)


def test_coco_rle_without_pycocotools_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError("No module named 'pycocotools'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    with pytest.raises(ImportError, match="output_mode='coco_rle' needs pycocotools"):
        ops.coco_encode_rle({"size": [1, 1], "counts": [1]})


def test_nms_by_hand():
    boxes = np.asarray(
        [
            [0, 0, 10, 10],  # 0: best
            [0, 0, 10, 8],  # 1: IoU 0.8 with 0 -> suppressed at 0.7
            [0, 0, 10, 7],  # 2: IoU exactly 0.7 with 0 -> kept (strictly above suppresses)
            [20, 20, 30, 30],  # 3: disjoint, ties with 4 on score
            [20, 20, 30, 30],  # 4: the same box, same score: the later index goes
            [5, 5, 5, 5],  # 5: zero area: IoU 0 (or NaN) with everything, kept
        ],
        np.float32,
    )
    scores = np.asarray([0.9, 0.8, 0.7, 0.5, 0.5, 0.1], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.7), [0, 2, 3, 5])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.75), [0, 2, 3, 5])
    # At 0.85 box 1 stays and suppresses box 2 (IoU 70 / 80).
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.85), [0, 1, 3, 5])
    assert ops.nms(np.zeros((0, 4)), np.zeros(0), 0.7).shape == (0,)


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_equals_the_reference_on_many_boxes(threshold):
    rng = np.random.RandomState(5)
    corners = rng.randint(0, 60, (300, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)
    scores = np.round(rng.rand(300), 1).astype(np.float32)  # many ties
    expected = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(300), threshold
    ).numpy()
    np.testing.assert_array_equal(ops.nms(boxes, scores, threshold), expected)


def test_small_regions_use_eight_connectivity():
    mask = np.zeros((8, 8), bool)
    mask[1:4, 1:4] = True  # 9 pixels
    mask[4, 4] = mask[5, 5] = True  # touches the square diagonally: one 8-connected region of 11
    mask[7, 0] = True  # an island of 1
    cleaned, changed = ops.remove_small_regions(mask, 5, "islands")
    expected = mask.copy()
    expected[7, 0] = False
    assert changed
    np.testing.assert_array_equal(cleaned, expected)
    same, changed = ops.remove_small_regions(expected, 5, "islands")
    assert not changed
    np.testing.assert_array_equal(same, expected)

    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False  # a hole of 1 pixel
    filled, changed = ops.remove_small_regions(ring, 2, "holes")
    assert changed and filled[3, 3] and filled.sum() == 25
    every_island_small, changed = ops.remove_small_regions(mask, 100, "islands")
    assert changed
    np.testing.assert_array_equal(every_island_small, expected)  # the largest stays
    with pytest.raises(ValueError, match="mode must be 'holes' or 'islands'"):
        ops.remove_small_regions(mask, 5, "gaps")


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [3, 30, 10_000])
def test_small_regions_equal_opencv(mode, area):
    pytest.importorskip("cv2")
    masks = random_logits((8, 60, 80), seed=6) + np.random.RandomState(7).randn(8, 60, 80) > 0
    for mask in masks:
        expected, expected_changed = amg.remove_small_regions(mask, area, mode)
        actual, changed = ops.remove_small_regions(mask, area, mode)
        assert changed == expected_changed
        np.testing.assert_array_equal(actual, expected)
