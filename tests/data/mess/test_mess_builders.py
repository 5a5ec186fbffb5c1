"""Every MESS builder, built from a tiny fake download in the real archive layout.

Each test writes the fake files into a manual directory, prepares the dataset as array_record in
a temporary data_dir, reads it back with ``tfds.data_source`` (numpy; no TensorFlow) and checks
the metadata, the split sizes (the carved dev split included), and the exact image and label of
known examples (label mappings, the ignore label 255, tiling).
"""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds
from _mess_fakes import fakes

from mopeft_jax.data import mess
from mopeft_jax.data.mess.builder import carve_dev
from mopeft_jax.data.records import Pair
from mopeft_jax.segments import IGNORE_LABEL

FAKES = fakes()


def _build(name, tmp_path, monkeypatch, tile_size=None):
    """Builds ``name`` from its fake; tiled datasets use small tiles unless told otherwise."""
    spec = mess.get_spec(name)
    if spec.tile_size is not None and tile_size is None:
        monkeypatch.setattr(
            mess.builder_class(name),
            "SPEC",
            dataclasses.replace(spec, tile_size=4),
        )
    manual = tmp_path / "manual"
    expect = FAKES[name](manual)
    builder = mess.build(name, manual, data_dir=tmp_path / "data")
    return builder, expect


def _read_split(name, split, data_dir):
    source = tfds.data_source(mess.get_spec(name).tfds_name, split=split, data_dir=data_dir)
    examples = {}
    for i in range(len(source)):
        ex = source[i]
        examples[ex["file_name"].decode()] = ex
    assert len(examples) == len(source), "file names must be unique within a split"
    return examples


def test_every_registered_dataset_has_a_fake():
    assert set(FAKES) == set(mess.REGISTRY)


def test_mess20_lists_twenty_datasets():
    assert len(mess.MESS20) == 20
    names = [n for group in mess.MESS20.values() for n in group]
    assert sorted(names) == sorted(n for n, s in mess.REGISTRY.items() if s.mess_name is not None)
    assert "DRAM" not in mess.MESS20 and "WorldFloods" not in mess.MESS20


def test_training_sources_serve_mess_datasets_without_a_train_split():
    sources = {n: s.train_source_for for n, s in mess.REGISTRY.items() if s.mess_name is None}
    assert sources == {
        "drive": ("chase_db1",),
        "stare": ("chase_db1",),
        "monuseg": ("cryonuseg",),
    }
    assert len(mess.REGISTRY) == 26
    with pytest.raises(ValueError, match="mess_name .* or train_source_for"):
        dataclasses.replace(mess.get_spec("drive"), train_source_for=())


@pytest.mark.parametrize("name", ["drive", "monuseg"])
def test_test_data_may_be_missing(name, tmp_path):
    # DRIVE's challenge site withholds the test annotations; MoNuSeg's test zip is separate.
    from _mess_fakes import make_drive, make_monuseg

    manual = tmp_path / "manual"
    if name == "drive":
        expect = make_drive(manual, test_labels=False)
    else:
        expect = make_monuseg(manual, test=False)
    builder = mess.build(name, manual, data_dir=tmp_path / "data")
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == expect.sizes
    assert set(expect.sizes) == {"train"}
    assert "(test split only)" in mess.get_spec(name).manual_instructions()


@pytest.mark.parametrize("name", sorted(FAKES))
def test_builder(name, tmp_path, monkeypatch):
    spec = mess.get_spec(name)
    builder, expect = _build(name, tmp_path, monkeypatch)

    meta = builder.info.metadata
    assert meta["classes"] == list(spec.classes)
    assert meta["background_class"] == spec.background_class
    assert meta["ignore_label"] == 255
    assert meta["domain"] == spec.domain and meta["eval_split"] == spec.eval_split
    assert spec.eval_split in builder.info.splits
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == expect.sizes

    # Read back from disk through a fresh builder, as a user would.
    reloaded = tfds.builder(spec.tfds_name, data_dir=tmp_path / "data")
    assert reloaded.info.metadata["classes"] == list(spec.classes)

    checked = 0
    for split, size in expect.sizes.items():
        examples = _read_split(name, split, tmp_path / "data")
        assert len(examples) == size
        for file_name, ex in examples.items():
            image, label = ex["image"], ex["label"]
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
            assert label.dtype == np.uint8 and label.shape == image.shape[:2]
            valid = (label < spec.num_classes) | (label == IGNORE_LABEL)
            assert valid.all(), f"{file_name}: label values {np.unique(label)}"
            if (split, file_name) in expect.labels:
                np.testing.assert_array_equal(label, expect.labels[split, file_name], file_name)
                checked += 1
            if (split, file_name) in expect.images:
                np.testing.assert_array_equal(image, expect.images[split, file_name], file_name)
    assert checked == len(expect.labels), "every expected example must be present"


def test_dev_split_is_carved_by_group(tmp_path, monkeypatch):
    # UAVid: frames of one sequence must all land in dev or all in train.
    _build("uavid", tmp_path, monkeypatch)
    seqs = {}
    for split in ("train", "dev"):
        for file_name in _read_split("uavid", split, tmp_path / "data"):
            seqs.setdefault(split, set()).add(file_name.split("_")[0])
    assert seqs["train"] and seqs["dev"] and not (seqs["train"] & seqs["dev"])


def test_carve_dev_is_deterministic_and_order_free():
    pairs = [Pair(key=f"k{i}", file_name=f"k{i}", read=None) for i in range(50)]
    train, dev = carve_dev(pairs, 0.1, "seed")
    train2, dev2 = carve_dev(list(reversed(pairs)), 0.1, "seed")
    assert len(dev) == 5 and len(train) == 45
    assert {p.key for p in dev} == {p.key for p in dev2}


def test_real_tile_size(tmp_path):
    # FloodNet at MESS's 1024 px tiles: a 1030 x 1100 image gives 2 x 2 padded JPEG tiles.
    from _mess_fakes import make_floodnet

    manual = tmp_path / "manual"
    expect = make_floodnet(manual, 1024, shape=(1030, 1100))
    mess.build("floodnet", manual, data_dir=tmp_path / "data")
    examples = _read_split("floodnet", "val", tmp_path / "data")
    assert sorted(examples) == ["6000_0.jpg", "6000_1.jpg", "6000_2.jpg", "6000_3.jpg"]
    for file_name, ex in examples.items():
        assert ex["image"].shape == (1024, 1024, 3)
        np.testing.assert_array_equal(ex["label"], expect.labels["val", file_name])
        np.testing.assert_array_equal(ex["image"], expect.images["val", file_name])
    assert (examples["6000_3.jpg"]["label"][6:, :] == 255).all()  # padding is ignored
