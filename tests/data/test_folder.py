"""The generic folder builder: images + label PNGs + classes.txt -> array_record."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mopeft_jax.data import folder
from mopeft_jax.data.mess import ManualDataError


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make(root, layout="split_first", splits=(("train", 3), ("val", 2))):
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    rng = np.random.default_rng(0)
    expected = {}
    for split, n in splits:
        for k in range(n):
            image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
            label = np.array([[0, 1, 2, 255, 1, 0, k % 3]] * 5, np.uint8)
            if layout == "split_first":
                img_path, lab_path = root / split / "images", root / split / "labels"
            elif layout == "kind_first":
                img_path, lab_path = root / "images" / split, root / "labels" / split
            else:
                img_path, lab_path = root / "images", root / "labels"
            # Nested subfolders are kept, except in the flat layout, where a subfolder of
            # images/ would be read as a split.
            sub = "" if layout == "flat" else "sub"
            _write(img_path / sub / f"{k}.png", _png(image))
            _write(lab_path / sub / f"{k}.png", _png(label))
            expected[(split, k)] = (image, label)
    return expected


@pytest.mark.parametrize("layout", ["split_first", "kind_first", "flat"])
def test_build_and_read(tmp_path, layout):
    root = tmp_path / "My Data"
    splits = (("train", 3), ("val", 2)) if layout != "flat" else (("train", 3),)
    expected = _make(root, layout, splits)
    builder = folder.build_folder(root, background_class="background", data_dir=tmp_path / "d")
    meta = builder.info.metadata
    assert meta["classes"] == ["background", "cat", "dog"]
    assert meta["background_class"] == 0 and meta["ignore_label"] == 255
    assert builder.builder_config.name == "my_data"
    for split, n in splits:
        source = folder.data_source("my_data", split, data_dir=tmp_path / "d")
        assert len(source) == n
        for i in range(n):
            ex = source[i]
            k = int(ex["file_name"].decode().rsplit("/", 1)[1].split(".")[0])
            np.testing.assert_array_equal(ex["image"], expected[(split, k)][0])
            np.testing.assert_array_equal(ex["label"], expected[(split, k)][1])
    # Plain tfds finds it too, with the metadata, without the original folder.
    reloaded = tfds.builder("folder_segmentation/my_data", data_dir=tmp_path / "d")
    assert reloaded.info.metadata["classes"] == ["background", "cat", "dog"]


def test_no_background(tmp_path):
    _make(tmp_path / "x")
    builder = folder.build_folder(tmp_path / "x", name="other", data_dir=tmp_path / "d")
    assert builder.info.metadata["background_class"] is None


def test_missing_pieces_are_listed(tmp_path):
    root = tmp_path / "x"
    _make(root)
    (root / "classes.txt").unlink()
    (root / "val" / "labels" / "sub" / "1.png").unlink()
    with pytest.raises(ManualDataError) as err:
        folder.build_folder(root, data_dir=tmp_path / "d")
    message = str(err.value)
    assert "classes.txt is missing" in message
    assert "1 images of split 'val' lack a label" in message
    assert "Expected layout" in message


def test_bad_label_values(tmp_path):
    root = tmp_path / "x"
    _make(root)
    _write(root / "train" / "labels" / "sub" / "0.png", _png(np.full((5, 7), 7, np.uint8)))
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        folder.build_folder(root, data_dir=tmp_path / "d")


def test_rgb_labels_are_refused(tmp_path):
    root = tmp_path / "x"
    _make(root)
    _write(root / "train" / "labels" / "sub" / "0.png", _png(np.zeros((5, 7, 3), np.uint8)))
    with pytest.raises(ValueError, match="one channel"):
        folder.build_folder(root, data_dir=tmp_path / "d")
