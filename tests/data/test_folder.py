"""The generic folder builder: images + label PNGs + classes.txt -> array_record."""

import io
import pathlib

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


def _binary(root, splits=(("train", 2), ("val", 1))):
    """A two-class folder whose masks are saved as 0/255, the commonest binary format."""
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("background\nlesion\n")
    for split, n in splits:
        for k in range(n):
            mask = np.zeros((6, 6), np.uint8)
            mask[1:4, 2 : 3 + k] = 255
            _write(root / split / "images" / f"{k}.png", _png(np.full((6, 6, 3), 9, np.uint8)))
            _write(root / split / "labels" / f"{k}.png", _png(mask))
    return root


def test_binary_masks_saved_as_0_255_are_refused_unless_asked_for(tmp_path):
    root = _binary(tmp_path / "lesions")
    with pytest.raises(ValueError, match=r"only 0 and 255: binary masks saved as 0/255\?.*"):
        folder.build_folder(root, data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()  # nothing half-written
    folder.build_folder(root, binary_masks=True, data_dir=tmp_path / "d")
    label = folder.data_source("lesions", "train", data_dir=tmp_path / "d")[1]["label"]
    expected = np.zeros((6, 6), np.uint8)
    expected[1:4, 2:4] = 1
    np.testing.assert_array_equal(label, expected)
    # With binary_masks, any other value is an error that names its file.
    bad = root / "val" / "labels" / "0.png"
    _write(bad, _png(np.full((6, 6), 7, np.uint8)))
    with pytest.raises(
        ValueError, match=rf"{bad}: binary_masks=True, but the label holds values \[7\]"
    ):
        folder.build_folder(root, binary_masks=True, data_dir=tmp_path / "d2")


def test_changed_folder_is_rebuilt_and_unchanged_one_reused(tmp_path, caplog):
    root = tmp_path / "x"
    _make(root)
    data = tmp_path / "d"
    first = folder.build_folder(root, data_dir=data)
    record = pathlib.Path(first.data_dir) / "metadata.json"
    stamp = record.stat().st_mtime_ns
    folder.build_folder(root, data_dir=data)
    assert record.stat().st_mtime_ns == stamp  # reused as prepared
    new_label = np.array([[2, 2, 2, 2, 2, 2, 2]] * 5, np.uint8)
    _write(root / "train" / "labels" / "sub" / "0.png", _png(new_label))
    with caplog.at_level("WARNING"):
        folder.build_folder(root, data_dir=data)
    assert "Rebuilding folder:x (its folder changed since it was prepared)" in caplog.text
    examples = folder.data_source("x", "train", data_dir=data)
    labels = {examples[i]["file_name"].decode(): examples[i]["label"] for i in range(3)}
    np.testing.assert_array_equal(labels["train/images/sub/0.png"], new_label)
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    assert folder.build_folder(root, data_dir=data).info.metadata["classes"][-1] == "bird"
    caplog.clear()
    with caplog.at_level("WARNING"):
        folder.build_folder(root, overwrite=True, data_dir=data)
    assert "Rebuilding folder:x (overwrite=True)" in caplog.text


def test_corrupt_files_are_named(tmp_path):
    root = tmp_path / "x"
    _make(root)
    label = root / "train" / "labels" / "sub" / "1.png"
    label.write_bytes(label.read_bytes()[:20])
    with pytest.raises(ValueError, match=rf"{label}: cannot read this label PNG"):
        folder.build_folder(root, data_dir=tmp_path / "d")
    _make(tmp_path / "y")
    image = tmp_path / "y" / "val" / "images" / "sub" / "0.png"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{image}: cannot read this image"):
        folder.build_folder(tmp_path / "y", data_dir=tmp_path / "d")


def test_unused_classes_and_unlabelled_splits_are_warned_about(tmp_path, caplog):
    root = tmp_path / "x"
    _make(root)
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    for k in range(2):
        _write(root / "val" / "labels" / "sub" / f"{k}.png", _png(np.full((5, 7), 255, np.uint8)))
    with caplog.at_level("WARNING"):
        counts = folder.survey_labels(
            folder.scan_folder(root), ("background", "cat", "dog", "bird")
        )
    assert "Classes ['bird'] occur in no label" in caplog.text
    assert "Split 'val' has no labelled pixel" in caplog.text
    assert "Split 'train'" not in caplog.text
    # Pixel counts per class, the ignored ones last: 3 train labels of 5 x 7.
    assert counts["train"].sum() == 3 * 35 and counts["val"].tolist() == [0, 0, 0, 0, 70]
