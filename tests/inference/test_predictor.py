"""SamPredictor gives the official SamPredictor's masks, scores and low-res logits."""

import jax
import numpy as np
import pytest
import torch
from official_reference import converted, random_image, randomized_peft_params
from sam_configs import SMALL_CONFIGS
from segment_anything import SamPredictor as OfficialPredictor

from mopeft_jax import Sam, SamConfig, SamPredictor, save_pretrained
from mopeft_jax.inference import predictor as predictor_module
from mopeft_jax.preprocessing import apply_boxes, apply_coords, preprocess_image
from mopeft_jax.sam.transforms import postprocess_masks
from weights_convert.official import relative_error

CONFIG = SMALL_CONFIGS["windowed_padded"]
LOGIT_TOL = 1e-4  # relative, as the model parity tests
SCORE_TOL = 1e-5  # absolute
# Masks are logits > 0. Logits differ from the official by float32 rounding (~1e-6 here), so a
# pixel whose logit is this close to 0 may fall on either side; none may differ elsewhere.
THRESHOLD_BAND = 1e-4


@pytest.fixture(scope="module")
def model():
    return converted(CONFIG)


@pytest.fixture(scope="module")
def predictors(model):
    reference, config, params = model
    return OfficialPredictor(reference), SamPredictor(config, params, max_prompt_batch=4)


def assert_same_masks(masks, expected_logits):
    """Binary masks equal official logits > 0, except pixels within THRESHOLD_BAND of 0."""
    expected_logits = np.asarray(expected_logits)
    assert masks.dtype == bool and masks.shape == expected_logits.shape
    differ = masks != (expected_logits > 0)
    assert np.all(np.abs(expected_logits[differ]) < THRESHOLD_BAND)
    assert differ.sum() <= 3


def assert_same_prediction(ours, official, official_logits):
    masks, scores, low_res = ours
    expected_masks, expected_scores, expected_low_res = official
    assert_same_masks(masks, official_logits)
    np.testing.assert_array_equal(masks.shape, expected_masks.shape)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=SCORE_TOL)
    assert low_res.dtype == np.float32
    assert relative_error(low_res, expected_low_res) <= LOGIT_TOL


def both_predict(predictors, **prompts):
    """(ours, official, official logits) for the same call."""
    official, ours = predictors
    expected = official.predict(**prompts)
    expected_logits = official.predict(**prompts, return_logits=True)[0]
    return ours.predict(**prompts), expected, expected_logits


IMAGES = {
    "rgb, downscaled": lambda: random_image(150, 200, seed=1),
    "grayscale, upscaled": lambda: random_image(50, 70, seed=2)[..., 0],
    "rgba, tall": lambda: np.dstack(
        [random_image(128, 97, seed=3), np.full((128, 97), 7, np.uint8)]
    ),
}


@pytest.mark.parametrize("image_kind", sorted(IMAGES))
def test_set_image_matches_the_official(predictors, image_kind):
    official, ours = predictors
    image = IMAGES[image_kind]()
    rgb = np.dstack([image] * 3) if image.ndim == 2 else image[..., :3]
    official.set_image(rgb)
    ours.set_image(image)
    assert ours.is_image_set and ours.original_size == official.original_size
    assert ours.input_size == official.input_size
    embedding = official.get_image_embedding().permute(0, 2, 3, 1).numpy()
    assert relative_error(ours.get_image_embedding(), embedding) <= 1e-5

    h, w = rgb.shape[:2]
    points = np.asarray([[0.3 * w, 0.6 * h], [0.8 * w, 0.2 * h]])
    assert_same_prediction(*both_predict(predictors, point_coords=points, point_labels=[1, 0]))


def test_prompt_kinds_match_the_official(predictors):
    official, ours = predictors
    image = random_image(150, 200, seed=1)
    official.set_image(image)
    ours.set_image(image)
    points, labels = np.asarray([[50.0, 60.0], [120, 30], [10, 140]]), np.asarray([1, 0, 1])
    box = np.asarray([20, 30, 150.5, 120])

    assert_same_prediction(*both_predict(predictors, box=box, multimask_output=False))
    ours_out, official_out, official_logits = both_predict(
        predictors, point_coords=points, point_labels=labels, box=box
    )
    assert_same_prediction(ours_out, official_out, official_logits)
    assert ours_out[0].shape == (3, 150, 200) and ours_out[2].shape == (3, 32, 32)
    logits = ours.predict(point_coords=points, point_labels=labels, box=box, return_logits=True)[0]
    assert logits.dtype == np.float32
    assert relative_error(logits, official_logits) <= LOGIT_TOL

    previous = official_out[2][np.argmax(official_out[1])][None]
    assert_same_prediction(
        *both_predict(
            predictors, point_coords=points[:1], point_labels=labels[:1], mask_input=previous
        )
    )
    assert_same_prediction(*both_predict(predictors))  # no prompt: the no-mask embedding only


def test_predict_batch_matches_predict_torch(predictors):
    """Five boxes with points, decoded in chunks of 4 (padded to 4, then to 1)."""
    official, ours = predictors
    image = random_image(150, 200, seed=1)
    official.set_image(image)
    ours.set_image(image)
    rng = np.random.RandomState(0)
    corners = np.sort(rng.rand(5, 2, 2) * [200, 150], axis=1)
    boxes = corners.reshape(5, 4)
    points = rng.rand(5, 2, 2) * [200, 150]
    labels = rng.randint(0, 2, (5, 2))
    size = CONFIG.image_size
    torch_prompts = dict(
        point_coords=torch.from_numpy(apply_coords(points, (150, 200), size)),
        point_labels=torch.from_numpy(labels),
        boxes=torch.from_numpy(apply_boxes(boxes, (150, 200), size)),
    )
    expected = [x.numpy() for x in official.predict_torch(**torch_prompts)]
    expected_logits = official.predict_torch(**torch_prompts, return_logits=True)[0].numpy()
    actual = ours.predict_batch(point_coords=points, point_labels=labels, boxes=boxes)
    assert actual[0].shape == (5, 3, 150, 200)
    assert_same_prediction(actual, expected, expected_logits)


def test_prompt_batches_reuse_compilations(predictors):
    """Batches of 3 and 4 share the bucket of 4 (max_prompt_batch); 5 to 9 run as chunks of 4."""
    _, ours = predictors
    ours.set_image(random_image(60, 80))
    boxes = np.asarray([[5, 5, 40, 30]] * 9, np.float32)
    ours.predict_batch(boxes=boxes[:3], multimask_output=False)
    compiled = predictor_module._decode._cache_size()
    for n in (4, 3, 5, 9):
        masks, scores, low_res = ours.predict_batch(boxes=boxes[:n], multimask_output=False)
        assert masks.shape == (n, 1, 60, 80) and scores.shape == (n, 1)
        np.testing.assert_array_equal(masks, np.repeat(masks[:1], n, axis=0))
    assert predictor_module._decode._cache_size() == compiled


def test_zero_prompt_sets_give_empty_arrays(predictors):
    _, ours = predictors
    ours.set_image(random_image(60, 80))
    masks, scores, low_res = ours.predict_batch(boxes=np.zeros((0, 4)))
    assert masks.shape == (0, 3, 60, 80) and masks.dtype == bool
    assert scores.shape == (0, 3) and low_res.shape == (0, 3, 32, 32)
    logits = ours.predict_batch(
        point_coords=np.zeros((0, 2, 2)), point_labels=np.zeros((0, 2)), return_logits=True
    )[0]
    assert logits.shape == (0, 3, 60, 80) and logits.dtype == np.float32


def test_bgr_and_reset(predictors):
    _, ours = predictors
    image = random_image(60, 80)
    ours.set_image(image)
    expected = ours.predict(box=[10, 10, 50, 40])
    ours.set_image(image[..., ::-1], image_format="BGR")
    for a, b in zip(ours.predict(box=[10, 10, 50, 40]), expected):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ours.predict(box=[[10, 10, 50, 40]]), expected):  # (1, 4), as the official
        np.testing.assert_array_equal(a, b)
    ours.reset_image()
    assert not ours.is_image_set and ours.original_size is None and ours.input_size is None


BAD_PROMPTS = [
    (
        dict(point_coords=[[1.0, np.nan]], point_labels=[1]),
        "point_coords must be finite numbers; got nan at index",
    ),
    (
        dict(box=[30.5, 5.0, 10.0, 40.0]),
        r"box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0; got \[30.5, 5.0, 10.0, 40.0\]",
    ),
    (dict(point_coords=[[1.0, 2.0]]), "point_coords and point_labels must be given together"),
    (dict(point_labels=[1]), "point_coords and point_labels must be given together"),
    (
        dict(box=[[1, 2, 3, 4], [5, 6, 7, 8]]),
        r"box must be \(4\) or \(1, 4\) as x0, y0, x1, y1; got shape \(2, 4\)",
    ),
    (
        dict(point_coords=[[1.0, 2.0], [3, 4]], point_labels=[1]),
        r"one label per point: point_coords has shape \(2, 2\), point_labels \(1,\)",
    ),
    (
        dict(point_coords=[[1.0, 2.0]], point_labels=[2]),
        r"must be 1 \(foreground\), 0 \(background\) or -1 \(ignored\); got \[2\]",
    ),
    (
        dict(point_coords=[1.0, 2.0], point_labels=[1]),
        r"point_coords must be \(N, 2\) points \(x, y\); got shape \(2,\)",
    ),
    (dict(mask_input=np.zeros((1, 64, 64))), r"mask_input must be \(1, 32, 32\) low-res logits"),
]


@pytest.mark.parametrize("prompts, message", BAD_PROMPTS)
def test_bad_prompts_get_one_clear_error(predictors, prompts, message):
    _, ours = predictors
    ours.set_image(random_image(60, 80))
    with pytest.raises(ValueError, match=message):
        ours.predict(**prompts)


def test_bad_batched_prompts_and_images(predictors):
    _, ours = predictors
    ours.set_image(random_image(60, 80))
    with pytest.raises(
        ValueError, match=r"boxes must be \(B, 4\) as x0, y0, x1, y1; got shape \(4,\)"
    ):
        ours.predict_batch(boxes=np.zeros(4))
    with pytest.raises(ValueError, match="disagree on the number of prompt sets B"):
        ours.predict_batch(boxes=np.zeros((2, 4)), mask_input=np.zeros((3, 1, 32, 32)))
    with pytest.raises(
        ValueError, match=r"image must be \(H, W\), \(H, W, 1\), \(H, W, 3\) or \(H, W, 4\)"
    ):
        ours.set_image(np.zeros((1, 60, 80, 3), np.uint8))
    with pytest.raises(ValueError, match=r"SAM expects 8-bit RGB in \[0, 255\]"):
        ours.set_image(np.full((60, 80, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match="image_format must be 'RGB' or 'BGR'"):
        ours.set_image(random_image(60, 80), image_format="HSV")
    ours.reset_image()
    with pytest.raises(ValueError, match=r"No image is set: call predictor.set_image\(image\)"):
        ours.predict(box=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="No image is set"):
        ours.get_image_embedding()


def test_a_peft_model_runs_its_peft_layers(model):
    _, config, params = model
    peft_config, peft_params = randomized_peft_params(config, params)
    image = random_image(150, 200, seed=1)
    box = np.asarray([20, 30, 150, 120])
    predictor = SamPredictor(peft_config, peft_params)
    predictor.set_image(image)
    logits, scores, low_res = predictor.predict(box=box, return_logits=True)

    pixels, input_size = preprocess_image(image, peft_config.image_size)
    boxes = apply_boxes(box[None], (150, 200), 128)
    expected_low_res, expected_scores = jax.jit(Sam(peft_config).apply)(
        {"params": peft_params}, pixels[None], boxes=boxes
    )
    expected = postprocess_masks(expected_low_res, input_size, (150, 200), 128)
    np.testing.assert_allclose(low_res, expected_low_res[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, expected_scores[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(logits, expected[0], rtol=0, atol=1e-5)

    plain = SamPredictor(config, params)
    plain.set_image(image)
    plain_logits = plain.predict(box=box, return_logits=True)[0]
    assert np.mean((plain_logits > 0) != (logits > 0)) > 0.05


def test_from_pretrained_folder(model, tmp_path):
    _, config, params = model
    save_pretrained(tmp_path / "sam", config, params)
    loaded = SamPredictor.from_pretrained(tmp_path / "sam")
    direct = SamPredictor(config, params)
    assert loaded.config == config
    image = random_image(60, 80)
    for predictor in (loaded, direct):
        predictor.set_image(image)
    for a, b in zip(loaded.predict(box=[5, 6, 50, 40]), direct.predict(box=[5, 6, 50, 40])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_vit_b_matches_the_official_predictor():
    """ViT-B at 1024 on a 600 x 800 image: about 30 s on a free 2-core CPU."""
    reference, config, params = converted(SamConfig.vit_b())
    official, ours = OfficialPredictor(reference), SamPredictor(config, params)
    image = random_image(600, 800, seed=5)
    official.set_image(image)
    ours.set_image(image)
    prompts = dict(
        point_coords=np.asarray([[400.0, 300.0], [100, 500]]),
        point_labels=np.asarray([1, 0]),
        box=np.asarray([250, 150, 650, 480]),
    )
    assert_same_prediction(*both_predict((official, ours), **prompts))
