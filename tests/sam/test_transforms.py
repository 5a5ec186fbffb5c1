"""Pre/post-processing follows the arithmetic of segment_anything's transforms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image
from sam_configs import SMALL_CONFIGS
from segment_anything.utils.transforms import ResizeLongestSide

from mopeft_jax.sam import transforms
from weights_convert.official import build_official_sam

SIZES = [(480, 640), (640, 480), (1024, 1024), (333, 1000), (1500, 77), (7, 5), (2048, 1365)]


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("long_side", [1024, 128])
def test_preprocess_shape(height, width, long_side):
    expected = ResizeLongestSide.get_preprocess_shape(height, width, long_side)
    assert transforms.preprocess_shape(height, width, long_side) == expected


@pytest.mark.parametrize("height, width", SIZES)
def test_coordinates_and_boxes_scale_with_the_image(height, width):
    rng = np.random.RandomState(0)
    coords = rng.rand(4, 3, 2) * [width, height]
    boxes = rng.rand(5, 4) * [width, height, width, height]
    official = ResizeLongestSide(1024)
    np.testing.assert_allclose(
        transforms.apply_coords(coords, (height, width)),
        official.apply_coords(coords, (height, width)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        transforms.apply_boxes(boxes, (height, width)),
        official.apply_boxes(boxes, (height, width)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("height, width", [(300, 500), (1500, 800), (64, 64), (1024, 700)])
def test_resize_matches_pil_bilinear_up_to_its_uint8_rounding(height, width):
    # The official apply_image resizes uint8 images with PIL's antialiased bilinear filter.
    image = (np.random.RandomState(1).rand(height, width, 3) * 255).astype(np.uint8)
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(height, width, 1024)
    expected = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    actual = np.asarray(transforms.resize_longest_side(jnp.asarray(image), 1024))
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1.0


def test_normalize_and_pad_equals_official_preprocess():
    config = SMALL_CONFIGS["windowed_padded"]
    official = build_official_sam(config)
    image = np.random.RandomState(2).rand(90, 128, 3).astype(np.float32) * 255
    with torch.no_grad():
        expected = official.preprocess(torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0)
    actual = transforms.normalize_and_pad(image, config.image_size)
    np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("original_size", [(480, 640), (100, 60), (1600, 1200), (1024, 1024)])
def test_postprocess_masks_equals_official(original_size):
    config = SMALL_CONFIGS["windowed_padded"]
    official = build_official_sam(config)
    input_size = ResizeLongestSide.get_preprocess_shape(*original_size, config.image_size)
    low = config.low_res_mask_size
    masks = np.random.RandomState(3).randn(2, 3, low, low).astype(np.float32)
    expected = official.postprocess_masks(torch.from_numpy(masks), input_size, original_size)
    postprocess = jax.jit(transforms.postprocess_masks, static_argnums=(1, 2, 3))
    actual = postprocess(masks, input_size, original_size, config.image_size)
    assert actual.shape == (2, 3, *original_size)
    np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=2e-5)


def test_preprocess_converts_grayscale_and_rgba_and_runs_under_jit():
    rgb = (np.random.RandomState(4).rand(50, 80, 3) * 255).astype(np.float32)
    rgba = np.concatenate([rgb, np.full((50, 80, 1), 7.0, np.float32)], axis=-1)
    gray = rgb[..., 0]
    run = jax.jit(functools.partial(transforms.preprocess, image_size=128))
    np.testing.assert_array_equal(run(rgba), run(rgb))
    np.testing.assert_array_equal(run(gray), run(np.repeat(gray[..., None], 3, axis=-1)))
    out = run(rgb)
    assert out.shape == (128, 128, 3)
    # 80 -> 128 wide, 50 -> 80 tall: the padding rows are exactly zero.
    assert float(jnp.abs(out[80:]).max()) == 0.0 and float(jnp.abs(out[79]).max()) > 0


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match=r"got \(4, 5, 2\)"):
        transforms.preprocess(np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="larger than the model input 64"):
        transforms.normalize_and_pad(np.zeros((65, 10, 3)), 64)
