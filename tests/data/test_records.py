"""Encoding of the examples every segmentation builder writes (mopeft_jax.data.records)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from mopeft_jax.data.records import (
    Pair,
    SizeMismatchError,
    decode_image,
    encode_example,
    tiles,
)


def _bytes(array, fmt, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


RGB = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
LABEL = np.array([[0, 1, 2] * 3] * 6, np.uint8)


def _examples(image, label=LABEL, **kwargs):
    pair = Pair(key="k", file_name="dir/a.jpg", read=lambda: (image, label))
    return list(encode_example(pair, 3, **kwargs))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_downloaded_rgb_bytes_are_kept(fmt):
    data = _bytes(RGB, fmt)
    [(key, example)] = _examples(data)
    assert key == "k" and example["file_name"] == "dir/a.jpg"
    assert example["image"] == data
    np.testing.assert_array_equal(example["label"], LABEL)
    assert example["label"].dtype == np.uint8


def test_other_images_are_stored_as_lossless_png():
    grey = RGB[..., 1]
    [(_, from_grey)] = _examples(_bytes(grey, "PNG"))
    np.testing.assert_array_equal(_decode(from_grey["image"]), np.stack([grey] * 3, axis=-1))
    [(_, from_tiff)] = _examples(_bytes(RGB, "TIFF"))
    assert from_tiff["image"][:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_decode(from_tiff["image"]), RGB)
    [(_, from_array)] = _examples(RGB)
    np.testing.assert_array_equal(_decode(from_array["image"]), RGB)


def test_resave_jpeg_is_pils_default_jpeg_of_the_rgb_image():
    # MESS: Image.open(path).convert("RGB").save("<name>.jpg"): PIL's JPEG at quality 75.
    for source in (_bytes(RGB, "JPEG", quality=95), _bytes(RGB, "PNG"), _bytes(RGB[..., 0], "PNG")):
        [(_, example)] = _examples(source, resave_jpeg=True)
        reference = io.BytesIO()
        Image.open(io.BytesIO(source)).convert("RGB").save(reference, "JPEG")
        assert example["image"] == reference.getvalue()
    assert example["image"] == _bytes(np.stack([RGB[..., 0]] * 3, axis=-1), "JPEG", quality=75)
    assert example["image"] != _bytes(np.stack([RGB[..., 0]] * 3, axis=-1), "JPEG", quality=90)


def test_tiles_are_row_major_and_padded():
    array = np.arange(5 * 7).reshape(5, 7)
    got = tiles(array, 4, -1)
    assert len(got) == 4 and all(t.shape == (4, 4) for t in got)
    np.testing.assert_array_equal(got[1][:, :3], array[:4, 4:])
    np.testing.assert_array_equal(got[2][0], [28, 29, 30, 31])
    assert (got[3][1:] == -1).all() and (got[3][:, 3:] == -1).all()


@pytest.mark.parametrize("resave_jpeg", [False, True])
def test_tiled_examples(resave_jpeg):
    examples = _examples(_bytes(RGB, "PNG"), tile_size=4, resave_jpeg=resave_jpeg)
    suffix = ".jpg" if resave_jpeg else ".png"
    # 6 x 9 px: 2 x 3 tiles, row-major
    assert [k for k, _ in examples] == [f"k_{i}" for i in range(6)]
    assert [e["file_name"] for _, e in examples] == [f"dir/a_{i}{suffix}" for i in range(6)]
    last = examples[5][1]
    padded = np.zeros((4, 4, 3), np.uint8)
    padded[:2, :1] = RGB[4:, 8:]
    if resave_jpeg:  # MESS: Image.fromarray(tile).save("<id>_<i>.jpg")
        assert last["image"] == _bytes(padded, "JPEG")
    else:
        np.testing.assert_array_equal(_decode(last["image"]), padded)
    want = np.full((4, 4), 255, np.uint8)
    want[:2, :1] = LABEL[4:, 8:]
    np.testing.assert_array_equal(last["label"], want)


def test_bad_labels_and_sizes():
    with pytest.raises(ValueError, match=r"dir/a.jpg: label values \[3, 7\] are neither"):
        _examples(RGB, label=np.array([[0, 3, 7, 255]] * 6))
    with pytest.raises(
        SizeMismatchError, match=r"dir/a.jpg: image is \(6, 9\) but label is \(2, 2\)"
    ):
        _examples(RGB, label=np.zeros((2, 2), np.uint8))
    with pytest.raises(SizeMismatchError, match=r"image is \(6, 9\) but label is \(6, 8\)"):
        _examples(RGB, label=np.zeros((6, 8), np.uint8), tile_size=4)
    with pytest.raises(ValueError, match="image of dtype float64 has values in"):
        _examples(RGB / 255.0)


def test_decode_image_lifts_the_pixel_limit_and_may_read_truncated_files(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # PIL's default
    data = _bytes(RGB, "JPEG")
    reference = _decode(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # RGB has 54 pixels: a "bomb" to PIL
    with pytest.raises(Image.DecompressionBombError):
        _decode(data)
    np.testing.assert_array_equal(np.asarray(decode_image(data)), reference)
    assert Image.MAX_IMAGE_PIXELS == 10
    truncated = _bytes(np.tile(RGB, (8, 8, 1)), "JPEG")[:-200]
    with pytest.raises(OSError, match="truncated"):
        decode_image(truncated)
    assert decode_image(truncated, allow_truncated=True).size == (72, 48)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
