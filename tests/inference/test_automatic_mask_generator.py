"""AutomaticMaskGenerator returns the official SamAutomaticMaskGenerator's records."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from official_reference import converted, random_image, randomized_peft_params
from sam_configs import SMALL_CONFIGS
from segment_anything import SamAutomaticMaskGenerator
from segment_anything import automatic_mask_generator as official_amg
from segment_anything.utils import amg

from mopeft_jax import AutomaticMaskGenerator, save_pretrained
from mopeft_jax.inference import masks as ops
from mopeft_jax.inference import predictor as predictor_module
from weights_convert.official import build_official_sam

CONFIG = SMALL_CONFIGS["windowed_padded"]
SCORE_TOL = 1e-5


def assert_same_records(actual, expected, mode="binary_mask"):
    """The same masks in the same order, with the same records (scores to float tolerance)."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert set(a) == set(e)
        if mode == "binary_mask":
            np.testing.assert_array_equal(a["segmentation"], e["segmentation"])
        else:
            assert a["segmentation"] == e["segmentation"]
        assert a["area"] == e["area"] and a["bbox"] == e["bbox"] and a["crop_box"] == e["crop_box"]
        np.testing.assert_allclose(a["point_coords"], e["point_coords"], rtol=0, atol=1e-9)
        for key in ("predicted_iou", "stability_score"):
            assert abs(a[key] - e[key]) <= SCORE_TOL


def test_the_tiny_random_sam_gives_the_official_masks():
    """End to end on the random SAM: its masks are noisy and cover most of the image, so the
    thresholds are low and the NMS keeps all but equal boxes (4 masks of 192 remain)."""
    reference, config, params = converted(CONFIG)
    options = dict(
        points_per_side=8,
        points_per_batch=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=0.05,
        box_nms_thresh=0.99,
        crop_n_layers=1,
        crop_nms_thresh=0.99,
    )
    image = random_image(150, 200, seed=0, noise=1)
    expected = SamAutomaticMaskGenerator(reference, **options).generate(image)
    actual = AutomaticMaskGenerator(config, params, **options).generate(image)
    assert len(actual) == 4
    assert_same_records(actual, expected)


# A stand-in mask decoder whose masks are disks around the point prompt, so that every stage
# of the generator has something to do: three masks a point, (B, 3, L, L) low-res logits.


def disk_logits(xp, coords, low_res_size, image_size):
    """Point prompts (B, 1, 2) in the input frame -> logits (B, 3, L, L) and IoUs (B, 3).

    In pixels of the input frame: mask 0 is a sharp disk of radius 8 (stable); mask 1 a disk of
    radius 24 with a hole of radius 2 at the point and an island of radius 2.5 40 pixels to the
    right (for min_mask_region_area); mask 2 a disk of radius 30 with a soft edge (unstable).
    The IoU prediction rises with the mask index and the point's x (and y, to break ties).
    """
    centres = (xp.arange(low_res_size) + 0.5) * (image_size / low_res_size)
    x, y = coords[:, 0, 0][:, None, None], coords[:, 0, 1][:, None, None]
    col, row = centres[None, None, :], centres[None, :, None]
    dist = xp.hypot(col - x, row - y)
    to_island = xp.hypot(col - (x + 40.0), row - y)
    logits = xp.stack(
        [
            (8.0 - dist) * 4.0,
            xp.maximum(xp.minimum(24.0 - dist, dist - 2.0), 2.5 - to_island),
            (30.0 - dist) / 4.0,
        ],
        1,
    )
    base = 1e-3 * x[:, 0, 0] + 1e-5 * y[:, 0, 0]
    iou = xp.stack([0.55 + base, 0.75 + base, 0.85 + base], 1)
    return logits, iou


class PointsOnly(torch.nn.Module):
    """The official prompt encoder's place: passes the points (float32) on to the decoder."""

    def forward(self, points, boxes, masks):
        return points[0].float(), None

    def get_dense_pe(self):
        return None


class DiskDecoder(torch.nn.Module):
    def forward(self, sparse_prompt_embeddings, multimask_output, **unused):
        size = CONFIG.image_size
        return disk_logits(torch, sparse_prompt_embeddings, CONFIG.low_res_mask_size, size)


@pytest.fixture
def disk_models(monkeypatch):
    """(official model, our config and params), both decoding disks."""
    _, config, params = converted(CONFIG)
    reference = build_official_sam(CONFIG)
    reference.prompt_encoder, reference.mask_decoder = PointsOnly(), DiskDecoder()
    jitted = jax.jit(
        lambda coords: disk_logits(jnp, coords, CONFIG.low_res_mask_size, CONFIG.image_size)
    )

    def decode(model, params, embedding, point_coords, *unused, multimask_output):
        return jitted(point_coords)

    monkeypatch.setattr(predictor_module, "_decode", decode)
    if importlib.util.find_spec("cv2") is None:
        # The official small-region removal needs OpenCV; test_masks compares ours with it.
        monkeypatch.setattr(official_amg, "remove_small_regions", ops.remove_small_regions)
    return reference, config, params


DISK_OPTIONS = dict(
    points_per_side=6,
    points_per_batch=8,
    pred_iou_thresh=0.6,
    stability_score_thresh=0.7,
    box_nms_thresh=0.3,
    crop_n_layers=1,
    crop_nms_thresh=0.6,
    crop_overlap_ratio=0.3,
)


def official_records(reference, image, **options):
    """The official generator; min_mask_region_area set after construction, where the official
    imports OpenCV (the removal itself is patched in if OpenCV is absent)."""
    min_area = options.pop("min_mask_region_area", 0)
    generator = SamAutomaticMaskGenerator(reference, **options)
    generator.min_mask_region_area = min_area
    return generator.generate(image)


@pytest.mark.parametrize("min_area", [0, 60])
def test_every_stage_gives_the_official_masks(disk_models, min_area):
    reference, config, params = disk_models
    image = random_image(150, 200, seed=2)
    options = dict(DISK_OPTIONS, min_mask_region_area=min_area)
    expected = official_records(reference, image, **options)
    actual = AutomaticMaskGenerator(config, params, **options).generate(image)
    assert_same_records(actual, expected)
    crops = {tuple(r["crop_box"]) for r in actual}
    assert len(actual) >= 10 and len(crops) >= 3  # masks from the image and from crops
    if min_area:  # holes were filled and islands removed
        plain = AutomaticMaskGenerator(config, params, **DISK_OPTIONS).generate(image)
        areas = lambda records: {(tuple(r["point_coords"][0]), r["area"]) for r in records}
        assert areas(plain) != areas(actual)


@pytest.mark.parametrize(
    "threshold", ["pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"]
)
def test_each_filter_removes_masks(disk_models, threshold):
    """The disk setting is one where each filter changes the masks (the test above covers it)."""
    _, config, params = disk_models
    image = random_image(150, 200, seed=2)
    loose = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    options = dict(DISK_OPTIONS, crop_n_layers=0)
    with_filter = AutomaticMaskGenerator(config, params, **options).generate(image)
    options[threshold] = loose[threshold]
    without = AutomaticMaskGenerator(config, params, **options).generate(image)
    masks = lambda records: {(tuple(r["point_coords"][0]), tuple(r["bbox"])) for r in records}
    assert with_filter and masks(without) != masks(with_filter)


@pytest.mark.parametrize("mode", ["uncompressed_rle", "coco_rle"])
def test_rle_output_modes(disk_models, mode):
    if mode == "coco_rle":
        pytest.importorskip("pycocotools")
    reference, config, params = disk_models
    image = random_image(90, 70, seed=3)
    options = dict(DISK_OPTIONS, crop_n_layers=0, output_mode=mode)
    expected = official_records(reference, image, **options)
    actual = AutomaticMaskGenerator(config, params, **options).generate(image)
    assert_same_records(actual, expected, mode)
    binary = AutomaticMaskGenerator(config, params, **dict(options, output_mode="binary_mask"))
    for record, mask in zip(actual, binary.generate(image)):
        rle = record["segmentation"]
        if mode == "uncompressed_rle":
            np.testing.assert_array_equal(amg.rle_to_mask(rle), mask["segmentation"])


def test_a_fine_tuned_model_from_its_folder(tmp_path):
    """A MoPEFT model saved with save_pretrained: its own masks, not the base model's."""
    _, config, params = converted(CONFIG)
    peft_config, peft_params = randomized_peft_params(config, params)
    save_pretrained(tmp_path / "run", peft_config, peft_params)
    options = dict(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0)
    options.update(stability_score_thresh=0.0, box_nms_thresh=0.99)
    image = random_image(60, 80)
    loaded = AutomaticMaskGenerator.from_pretrained(tmp_path / "run", **options)
    assert loaded.predictor.config == peft_config
    records = loaded.generate(image)
    direct = AutomaticMaskGenerator(peft_config, peft_params, **options).generate(image)
    assert len(records) > 0
    assert_same_records(records, direct)
    base = AutomaticMaskGenerator(config, params, **options).generate(image)
    scores = lambda records: sorted(r["predicted_iou"] for r in records)
    assert (
        len(base) != len(records) or np.abs(np.subtract(scores(base), scores(records))).max() > 0.01
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(points_per_side=None), "Give exactly one of points_per_side and point_grids"),
        (
            dict(point_grids=[np.zeros((4, 2))]),
            "Give exactly one of points_per_side and point_grids",
        ),
        (
            dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1),
            "point_grids has 1 grids; crop_n_layers=1 needs one per layer, 2",
        ),
        (dict(output_mode="png"), "output_mode must be one of"),
        (dict(points_per_batch=0), "points_per_batch must be positive"),
        (
            dict(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2),
            "leave 0 points per side",
        ),
    ],
)
def test_bad_options_get_one_clear_error(options, message):
    _, config, params = converted(CONFIG)
    with pytest.raises(ValueError, match=message):
        AutomaticMaskGenerator(config, params, **options)
