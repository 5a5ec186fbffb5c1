"""One loader by "kind:name" for synthetic, MESS and folder datasets, one DatasetInfo."""

import numpy as np
import pytest
from test_folder import _make

from mopeft_jax.data import DOMAINS, IGNORE_LABEL, DatasetError, folder, load_dataset, mess
from mopeft_jax.segments import IGNORE_LABEL as SEGMENTS_IGNORE_LABEL


def test_synthetic_dataset_is_the_generator_with_its_domain_info():
    dataset = load_dataset("synthetic:noise_shift", num_examples=5, image_size=32, seed=3)
    assert dataset.spec == "synthetic:noise_shift" and dataset.split == "val"
    assert len(dataset.source) == 5
    assert dataset.info is DOMAINS["noise_shift"]
    assert dataset.info.domain == "Synthetic" and dataset.info.background_class == 0
    example = dataset.source[2]
    assert example["image"].shape == (32, 32, 3) and example["label"].shape == (32, 32)
    again = load_dataset("synthetic:noise_shift", "val", num_examples=5, image_size=32, seed=3)
    np.testing.assert_array_equal(again.source[2]["image"], example["image"])
    train = load_dataset("synthetic:noise_shift", "train", num_examples=5, image_size=32, seed=3)
    assert train.split == "train"
    assert not np.array_equal(train.source[2]["image"], example["image"])


def test_mess_info_comes_from_its_spec():
    spec = mess.get_spec("paxray_lungs")
    info = spec.info
    assert info.name == "paxray_lungs" and info.domain == spec.domain
    assert info.class_names == tuple(spec.classes) and info.num_classes == spec.num_classes
    assert info.background_class == spec.background_class
    assert info.eval_split == spec.eval_split and info.ignore_label == 255


def test_the_ignore_label_is_defined_once():
    assert IGNORE_LABEL is SEGMENTS_IGNORE_LABEL == 255
    assert mess.IGNORE_LABEL is IGNORE_LABEL


def test_folder_dataset_loads_by_name(tmp_path):
    expected = _make(tmp_path / "pets")
    folder.build_folder(tmp_path / "pets", background_class="background", data_dir=tmp_path / "d")
    dataset = load_dataset("folder:pets", data_dir=tmp_path / "d")
    assert dataset.split == "val"  # the folder has a val split: it is evaluated by default
    assert dataset.info.class_names == ("background", "cat", "dog")
    assert dataset.info.background_class == 0 and dataset.info.domain == "Folder"
    assert len(dataset.source) == 2
    np.testing.assert_array_equal(dataset.source[0]["label"], expected[("val", 0)][1])
    train = load_dataset("folder:pets", "train", data_dir=tmp_path / "d")
    assert len(train.source) == 3


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("color_shift", DatasetError, "expected kind:name"),
        ("imagenet:val", DatasetError, "expected kind:name"),
        ("synthetic:nope", DatasetError, "unknown synthetic domain 'nope'"),
        ("mess:nope", DatasetError, "unknown MESS dataset 'nope'"),
    ],
)
def test_bad_names_get_one_clear_error(spec, error, match):
    with pytest.raises(error, match=match):
        load_dataset(spec)


def test_unprepared_datasets_say_how_to_prepare_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mess.build\('bdd100k'"):
        load_dataset("mess:bdd100k", data_dir=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"build_folder\(<your folder>, name='mine'"):
        load_dataset("folder:mine", data_dir=tmp_path)
