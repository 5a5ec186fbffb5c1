"""SAM's host-side preprocessing: bit-identical to the official, and strict about pixel values."""

import numpy as np
import pytest
import torch
from PIL import Image
from sam_configs import SMALL_CONFIGS
from segment_anything.utils.transforms import ResizeLongestSide

from mopeft_jax import preprocessing
from mopeft_jax.sam import transforms
from weights_convert.official import build_official_sam


@pytest.mark.parametrize("size", [(300, 500), (1500, 800), (64, 64)])
def test_preprocess_image_is_the_official_set_image_input(size):
    config = SMALL_CONFIGS["windowed_padded"]
    image = (np.random.RandomState(0).rand(*size, 3) * 255).astype(np.uint8)
    pixels, input_size = preprocessing.preprocess_image(
        image, config.image_size, config.pixel_mean, config.pixel_std
    )
    # The official path: apply_image (PIL bilinear through torchvision) then Sam.preprocess.
    h, w = ResizeLongestSide.get_preprocess_shape(*size, config.image_size)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    official = build_official_sam(config)
    with torch.no_grad():
        expected = official.preprocess(torch.tensor(resized).permute(2, 0, 1).float())
    assert input_size == (h, w)
    np.testing.assert_allclose(pixels, expected.permute(1, 2, 0).numpy(), rtol=0, atol=1e-5)


def test_grayscale_rgba_and_integer_valued_arrays_become_uint8_rgb():
    rgb = np.random.RandomState(1).randint(0, 256, (5, 6, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(preprocessing.to_rgb(rgba), rgb)
    gray = preprocessing.to_rgb(rgb[..., 0])
    assert gray.dtype == np.uint8 and gray.shape == (5, 6, 3)
    np.testing.assert_array_equal(gray[..., 2], rgb[..., 0])
    np.testing.assert_array_equal(preprocessing.to_rgb(rgb.astype(np.float32)), rgb)
    np.testing.assert_array_equal(preprocessing.to_rgb(rgb.astype(np.uint16)), rgb)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.full((4, 4, 3), 0.5, np.float32), r"values in \[0.5, 0.5\]: SAM expects 8-bit RGB"),
        (np.full((4, 4, 3), 4000, np.uint16), r"\(image // 257\).astype\(np.uint8\)"),
        (np.full((4, 4, 3), 3.5), "fractional values"),
        (np.full((4, 4, 3), np.nan), "NaN or infinite"),
        (np.zeros((0, 4, 3), np.uint8), "image is empty"),
        (np.zeros((4, 5, 2), np.uint8), r"got \(4, 5, 2\)"),
    ],
)
def test_bad_images_get_one_clear_error(image, match):
    with pytest.raises(ValueError, match=match):
        preprocessing.to_rgb(image)


def test_the_jitted_preprocess_checks_concrete_pixel_values_too():
    with pytest.raises(ValueError, match=r"convert it with \(image \* 255\)"):
        transforms.preprocess(np.full((8, 8, 3), 0.25, np.float32), 64)
    out = transforms.preprocess(np.full((8, 8, 3), 127.5, np.float32), 64)  # floats in [0, 255]
    assert out.shape == (64, 64, 3)
