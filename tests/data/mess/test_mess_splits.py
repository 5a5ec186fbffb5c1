"""Evaluation-only downloads: the splits whose files are present are built, the others explain.

MESS needs only the evaluated split's download for iSAID (val), SUIM (TEST.zip) and FloodNet
(the test folders). A build from such a download holds that split; asking for a split left out,
through ``mess.data_source`` or plain ``tfds.data_source``, raises ManualDataError naming its
files; building again once they are there adds it.
"""

import dataclasses
import shutil

import pytest
import tensorflow_datasets as tfds
from _mess_fakes import SMALL_TILE, fakes

from mopeft_jax.data import mess

FAKES = fakes()


def _drop_isaid_train(manual):
    shutil.rmtree(manual / "train")


def _drop_suim_train(manual):
    (manual / "train_val.zip").unlink()


def _drop_floodnet_train_val(manual):
    for split in ("train", "val"):
        shutil.rmtree(manual / "FloodNet-Supervised_v1.0" / split)


EVAL_ONLY = {
    # name: (what the user did not download, the splits left out)
    "isaid": (_drop_isaid_train, {"train", "dev"}),
    "suim": (_drop_suim_train, {"train"}),
    "floodnet": (_drop_floodnet_train_val, {"train", "val"}),
}


@pytest.mark.parametrize("name", sorted(EVAL_ONLY))
def test_evaluation_only_download_builds_the_evaluated_split(name, tmp_path, monkeypatch):
    drop, left_out = EVAL_ONLY[name]
    spec = mess.get_spec(name)
    if spec.tile_size is not None:  # the fakes' sizes are for 4 px tiles
        spec = dataclasses.replace(spec, tile_size=SMALL_TILE)
        monkeypatch.setattr(mess.builder_class(name), "SPEC", spec)
    manual = tmp_path / "manual"
    expect = FAKES[name](manual)
    drop(manual)
    assert set(mess.check_manual_dir(name, manual)) == left_out

    builder = mess.build(name, manual, data_dir=tmp_path / "data")
    assert set(builder.info.splits) == {spec.eval_split}
    assert set(builder.info.metadata["missing_splits"]) == left_out
    source = mess.data_source(name, spec.eval_split, data_dir=tmp_path / "data")
    assert len(source) == expect.sizes[spec.eval_split]

    for split in left_out:
        with pytest.raises(mess.ManualDataError) as err:
            mess.data_source(name, split, data_dir=tmp_path / "data")
        message = str(err.value)
        assert f"split {split!r}" in message and "was not built" in message
        assert f"mopeft_jax.data.mess.build({name!r}" in message
        needs = "train" if split == "dev" else split
        for res in spec.resources:
            assert (res.description in message) == (needs in res.splits), res.key


def test_missing_split_message_names_its_files(tmp_path):
    manual = tmp_path / "manual"
    FAKES["isaid"](manual)
    _drop_isaid_train(manual)
    mess.build("isaid", manual, data_dir=tmp_path / "data")
    with pytest.raises(mess.ManualDataError) as err:
        mess.data_source("isaid", "train", data_dir=tmp_path / "data")
    lines = str(err.value).splitlines()
    assert lines[0] == (
        "MESS dataset 'isaid' (iSAID): split 'train' was not built, since the manual directory "
        "lacked its files when the dataset was prepared. It needs:"
    )
    assert (
        "  - train/images/part*.zip or train/images/images (train split only)  [missing]" in lines
    )
    assert (
        "  - train/Semantic_masks/images.zip or train/Semantic_masks/images (train split only)  "
        "[missing]"
    ) in lines
    assert not any(line.startswith("  - val/") for line in lines)
    # Plain tfds, with a slice of the split, says the same instead of "Unknown split".
    with pytest.raises(mess.ManualDataError, match=r"split 'dev' \(carved from train\)"):
        tfds.data_source("mess_isaid", split="dev[:50%]", data_dir=tmp_path / "data")
    with pytest.raises(ValueError, match="Unknown split 'training'"):
        tfds.data_source("mess_isaid", split="training", data_dir=tmp_path / "data")


def test_building_again_adds_the_splits_downloaded_since(tmp_path):
    full, partial = tmp_path / "full", tmp_path / "partial"
    expect = FAKES["suim"](full)
    shutil.copytree(full, partial)
    _drop_suim_train(partial)
    data = tmp_path / "data"
    assert set(mess.build("suim", partial, data_dir=data).info.splits) == {"test"}
    # Still without train: the prepared dataset is reused.
    assert set(mess.build("suim", partial, data_dir=data).info.splits) == {"test"}
    builder = mess.build("suim", full, data_dir=data)
    sizes = {s: builder.info.splits[s].num_examples for s in builder.info.splits}
    assert sizes == expect.sizes
    assert builder.info.metadata["missing_splits"] == {}
    assert len(mess.data_source("suim", "train", data_dir=data)) == expect.sizes["train"]


def test_nothing_buildable_lists_every_file(tmp_path):
    # iSAID's val images without their masks, and no train folders: no split can be built.
    manual = tmp_path / "manual"
    FAKES["isaid"](manual)
    _drop_isaid_train(manual)
    shutil.rmtree(manual / "val" / "Semantic_masks")
    with pytest.raises(mess.ManualDataError) as err:
        mess.build("isaid", manual, data_dir=tmp_path / "data")
    message = str(err.value)
    assert message.count("[missing]") == 3 and message.count("[ok]") == 1
    assert "val/images/part*.zip or val/images/images (val split only)  [ok]" in message


def test_incomplete_split_download_leaves_its_split_out(tmp_path, caplog):
    # FloodNet's folder without test-label-img: test is left out, with the reason logged.
    manual = tmp_path / "manual"
    FAKES["floodnet"](manual)
    shutil.rmtree(manual / "FloodNet-Supervised_v1.0" / "test" / "test-label-img")
    missing = mess.check_manual_dir("floodnet", manual)
    assert list(missing) == ["test"]
    assert missing["test"]["test"].startswith("found, but incomplete or unreadable (")
    assert "lacks test/test-label-img" in missing["test"]["test"]
    assert "floodnet: split test left out: test found, but incomplete" in caplog.text
