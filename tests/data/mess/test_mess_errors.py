"""A missing or incomplete manual directory gives one error that lists what to download."""

import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from _mess_fakes import encode, fakes, write_zip

from mopeft_jax.data import mess


def _rewrite_zip(path, edit):
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    path.unlink()
    write_zip(path, edit(files))


@pytest.mark.parametrize("name", sorted(mess.REGISTRY))
def test_empty_manual_dir_lists_every_file(name, tmp_path):
    spec = mess.get_spec(name)
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(mess.ManualDataError) as err:
        mess.build(name, manual, data_dir=tmp_path / "data")
    message = str(err.value)
    assert str(manual) in message and spec.homepage in message
    for res in spec.resources:
        assert res.names[0] in message and res.description in message
    assert message.count("[missing]") == len(spec.resources)


def test_plain_tfds_build_raises_the_same_error(tmp_path):
    # tfds itself refuses an empty manual dir with a bare AssertionError; ours comes first.
    builder = tfds.builder("mess_cwfid", data_dir=tmp_path / "data", file_format="array_record")
    missing = tmp_path / "does_not_exist"
    with pytest.raises(mess.ManualDataError, match="cwfid/dataset"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(missing))
        )


def test_partly_downloaded(tmp_path):
    manual = tmp_path / "manual"
    fakes()["bdd100k"](manual)
    (manual / "bdd100k_sem_seg_labels_trainval.zip").unlink()
    with pytest.raises(mess.ManualDataError) as err:
        mess.check_manual_dir("bdd100k", manual)
    message = str(err.value)
    assert "bdd100k_images_10k.zip or bdd100k_images_10k or bdd100k  [ok]" in message
    assert "bdd100k_sem_seg_labels_trainval.zip or " in message
    assert message.count("[missing]") == 1
    assert "https://bdd-data.berkeley.edu/" in message


def test_wrong_archive_contents(tmp_path):
    manual = tmp_path / "manual"
    write_zip(manual / "DeepCrack.zip", {"README.md": b"not the data"})
    with pytest.raises(mess.ManualDataError, match=r"found, but incomplete.*train_img"):
        mess.check_manual_dir("deepcrack", manual)


def test_archive_without_a_split(tmp_path):
    manual = tmp_path / "manual"
    fakes()["zerowaste"](manual)
    # Keep the folders (the markers) but drop every val label: val has no pairs.
    _rewrite_zip(
        manual / "zerowaste-f-final.zip",
        lambda files: {n: d for n, d in files.items() if "val/sem_seg/" not in n},
    )
    with pytest.raises(mess.ManualDataError, match="no image/label pairs for split"):
        mess.build("zerowaste", manual, data_dir=tmp_path / "data")


def test_complete_fake_passes_the_check(tmp_path):
    manual = tmp_path / "manual"
    fakes()["cub_200"](manual)
    mess.check_manual_dir("cub_200", manual, workdir=tmp_path / "work")


def test_pair_of_different_sizes_is_skipped(tmp_path, caplog):
    manual = tmp_path / "manual"
    fakes()["deepcrack"](manual)
    bad = "train_lab/11125-0.png"

    def edit(files):
        files[bad] = encode(np.zeros((3, 3), np.uint8))
        return files

    _rewrite_zip(manual / "DeepCrack" / "dataset" / "DeepCrack.zip", edit)
    builder = mess.build("deepcrack", manual, data_dir=tmp_path / "data")
    assert builder.info.splits["train"].num_examples == 1  # of 2
    assert "image is (6, 8) but label is (3, 3)" in caplog.text


def test_unexpected_label_value_fails_loudly(tmp_path):
    manual = tmp_path / "manual"
    fakes()["zerowaste"](manual)

    def edit(files):
        files["splits_final_deblurred/test/sem_seg/01_frame_000000.PNG"] = encode(
            np.full((6, 8), 9, np.uint8)
        )
        return files

    _rewrite_zip(manual / "zerowaste-f-final.zip", edit)
    with pytest.raises(ValueError, match=r"label values \[9\]"):
        mess.build("zerowaste", manual, data_dir=tmp_path / "data")


def test_no_split_with_pairs(tmp_path):
    # DRIVE's test set alone, without its annotations: no split has image/label pairs.
    from _mess_fakes import make_drive

    make_drive(tmp_path / "full", test_labels=False)
    manual = tmp_path / "manual"
    manual.mkdir()
    (tmp_path / "full" / "DRIVE.zip").rename(manual / "test.zip")
    with pytest.raises(mess.ManualDataError) as err:
        mess.build("drive", manual, data_dir=tmp_path / "data")
    message = str(err.value)
    assert "DRIVE.zip or DRIVE or training.zip or training (train split only)  [missing]" in message
    assert "test.zip or test (test split only)  [found, but no image/label pairs]" in message
