"""The builders against MESS's own preparation scripts (``mess-benchmark`` 0.2), item by item.

For every MESS dataset, the fake download of ``_mess_fakes`` is laid out where MESS's
``prepare_<name>.py`` expects the raw download, the script's ``main()`` runs on it, and the items
MESS then evaluates (its registration's image and label folders for the evaluated split, paired
by file stem) are compared with the prepared split of our builder: the same items, the same label
pixels (read as detectron2's evaluator reads them) and the same images: the same bytes where MESS
re-saves JPEGs, the same pixels otherwise (read as detectron2 reads them, ``convert("RGB")``).

The scripts import ``gdown`` (for downloads, not used here), which is stubbed. Skipped where the
package is not installed (``pip install --no-deps mess-benchmark==0.2``).
"""

import dataclasses
import functools
import importlib.util
import io
import posixpath
import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import tensorflow_datasets as tfds
from _mess_fakes import SMALL_TILE, fakes
from PIL import Image, ImageFile

from mopeft_jax.data import mess
from mopeft_jax.data.mess import cwfid

if importlib.util.find_spec("mess") is None:
    pytest.skip(
        "mess-benchmark is not installed (pip install --no-deps mess-benchmark==0.2)",
        allow_module_level=True,
    )


def _unzip(archive, dest, password=None):
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest, pwd=password)


def _untar(archive, dest):
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def _unzip_to(archive, *dest):
    return lambda manual, root: _unzip(manual / archive, root.joinpath(*dest))


def _copy(source, dest):
    return lambda manual, root: shutil.copytree(manual / source, root / dest)


def _bdd100k(manual, root):
    for name in ("bdd100k_images_10k.zip", "bdd100k_sem_seg_labels_trainval.zip"):
        _unzip(manual / name, root)


def _cub(manual, root):
    _untar(manual / "CUB_200_2011.tgz", root)
    _untar(manual / "segmentations.tgz", root / "CUB_200_2011")


def _foodseg(manual, root):
    if (manual / "FoodSeg103.zip").exists():  # the fake encrypts it where `zip` is installed
        _unzip(manual / "FoodSeg103.zip", root, password=b"LARCdataset9947")
    else:
        shutil.copytree(manual / "FoodSeg103", root / "FoodSeg103")


def _isaid(manual, root):
    for part in sorted((manual / "val" / "images").glob("part*.zip")):
        _unzip(part, root / "isaid" / "val")
    _unzip(manual / "val" / "Semantic_masks" / "images.zip", root / "isaid" / "raw_val")


def _kvasir(manual, root):
    _unzip(manual / "kvasir-instrument.zip", root)
    for archive in ("images.tar.gz", "masks.tar.gz"):
        _untar(root / "kvasir-instrument" / archive, root / "kvasir-instrument")


def _potsdam(manual, root):
    ds = root / "ISPRS_Potsdam"
    _unzip(manual / "Potsdam.zip", ds)
    for name, dest in (("2_Ortho_RGB", ds), ("3_Ortho_IRRG", ds), ("5_Labels_all", ds / "Labels")):
        _unzip(ds / "Potsdam" / f"{name}.zip", dest)


def _uavid(manual, root):
    _unzip(manual / "uavid_v1.5_official_release_image.zip", root)
    (root / "uavid_v1.5_official_release_image").rename(root / "uavid_v1.5")


def _cwfid_ids(module, root, monkeypatch):
    # The script reads each of its 21 test ids; the fake has 2 of them. Same lists as ours.
    assert tuple(module.test_ids) == cwfid.TEST_IDS and tuple(module.train_ids) == cwfid.TRAIN_IDS
    images = root / "cwfid" / "images"
    present = [i for i in module.test_ids if (images / f"{i:03d}_image.png").exists()]
    monkeypatch.setattr(module, "test_ids", present)


def _stem_before(suffix):
    return lambda file_name: posixpath.basename(file_name)[: -len(suffix)]


@dataclasses.dataclass(frozen=True)
class Script:
    """One MESS preparation script, and where its inputs and outputs are.

    Attributes:
      layout: ``layout(manual_dir, datasets_dir)`` puts the fake download where the script reads
        it (``$DETECTRON2_DATASETS``).
      folder: the dataset's folder in ``datasets_dir``.
      images: the folder of the images MESS evaluates, in ``folder`` (``{split}``: the evaluated
        split), as MESS's registration names it.
      image_suffix: of an item's image file, after the item's key.
      labels, label_suffix: likewise of its label files.
      key: our example's ``file_name`` -> the item's key (default: the file's stem).
      adapt: ``adapt(module, datasets_dir, monkeypatch)`` before ``main()``, where the script
        needs more of the real dataset than the fake has.
      script: the script is ``prepare_<script>.py`` (default: the dataset's name).
    """

    layout: Callable[[Path, Path], None]
    folder: str
    images: str
    image_suffix: str
    labels: str = "annotations_detectron2/{split}"
    label_suffix: str = ".png"
    key: Optional[Callable[[str], str]] = None
    adapt: Optional[Callable] = None
    script: Optional[str] = None


_D2 = "images_detectron2/{split}"

SCRIPTS = {
    "atlantis": Script(_copy("atlantis/atlantis", "atlantis"), "atlantis", _D2, ".jpg"),
    "bdd100k": Script(_bdd100k, "bdd100k", "images/10k/{split}", ".jpg"),
    "chase_db1": Script(_unzip_to("CHASEDB1.zip", "CHASEDB1"), "CHASEDB1", _D2, ".jpg"),
    "corrosion_cs": Script(
        _unzip_to("31729733"),
        "Corrosion Condition State Classification",
        "original/Test/images",
        ".jpeg",
        labels="original/Test/masks",
    ),
    "cryonuseg": Script(
        _unzip_to("archive.zip", "CryoNuSeg"),
        "CryoNuSeg",
        "images_detectron2",
        ".png",
        labels="annotations_detectron2",
    ),
    "cub_200": Script(_cub, "CUB_200_2011", _D2, ".jpg"),
    "cwfid": Script(
        _copy("dataset", "cwfid"),
        "cwfid",
        "images",
        "image.png",
        label_suffix="annotation.png",
        key=_stem_before("image.png"),
        adapt=_cwfid_ids,
    ),
    "dark_zurich": Script(
        _unzip_to("Dark_Zurich_val_anon.zip", "Dark_Zurich"),
        "Dark_Zurich",
        "rgb_anon/{split}/night/GOPR0356",
        "_rgb_anon.png",
        label_suffix="_gt_labelIds.png",
        key=_stem_before("_rgb_anon.png"),
    ),
    "deepcrack": Script(
        lambda manual, root: _unzip(manual / "DeepCrack/dataset/DeepCrack.zip", root / "DeepCrack"),
        "DeepCrack",
        "test_img",
        ".jpg",
    ),
    "floodnet": Script(
        _copy("FloodNet-Supervised_v1.0", "FloodNet-Supervised_v1.0"),
        "FloodNet-Supervised_v1.0",
        _D2,
        ".jpg",
    ),
    "foodseg103": Script(
        _foodseg,
        "FoodSeg103",
        "Images/img_dir/{split}",
        ".jpg",
        labels="Images/ann_dir/{split}",
        script="foodseg",
    ),
    "isaid": Script(_isaid, "isaid", _D2, ".png"),
    "isprs_potsdam": Script(_potsdam, "ISPRS_Potsdam", _D2 + "/irrg", ".png"),
    "kvasir_instrument": Script(_kvasir, "kvasir-instrument", _D2, ".png"),
    "mhp_v1": Script(_unzip_to("LV-MHP-v1.zip"), "LV-MHP-v1", _D2, ".jpg"),
    "pst900": Script(
        _unzip_to("PST900_RGBT_Dataset.zip"),
        "PST900_RGBT_Dataset",
        "{split}/thermal",
        ".png",
        labels="{split}/labels",
    ),
    "suim": Script(_unzip_to("TEST.zip", "SUIM"), "SUIM", "TEST/images", ".jpg"),
    "uavid": Script(_uavid, "uavid_v1.5", _D2, ".png"),
    "zerowaste": Script(
        _unzip_to("zerowaste-f-final.zip", "zerowaste-f"),
        "zerowaste-f",
        "splits_final_deblurred/{split}/data",
        ".PNG",
        labels="splits_final_deblurred/{split}/sem_seg",
        label_suffix=".PNG",
    ),
}
for _target in ("lungs", "mediastinum", "bones", "diaphragm"):
    SCRIPTS[f"paxray_{_target}"] = Script(
        _unzip_to("paxray_dataset.zip", "paxray_dataset"),
        "paxray_dataset",
        _D2,
        ".png",
        labels="annotations_detectron2/{split}/" + _target,
        script="paxray",
    )


def test_every_mess_dataset_is_compared():
    assert set(SCRIPTS) == {n for n, spec in mess.REGISTRY.items() if spec.mess_name is not None}


def _run_mess_script(name, script, root, monkeypatch):
    """Runs MESS's ``prepare_*.main()`` on ``root`` (4 px tiles, as our tiled builds here)."""
    monkeypatch.setitem(sys.modules, "gdown", types.ModuleType("gdown"))
    # prepare_mhp_v1 sets PIL's LOAD_TRUNCATED_IMAGES on import: restored after the test.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", ImageFile.LOAD_TRUNCATED_IMAGES)
    found = importlib.util.find_spec(f"mess.prepare_datasets.prepare_{script.script or name}")
    module = importlib.util.module_from_spec(found)  # not kept in sys.modules: it saw the stub
    found.loader.exec_module(module)
    if hasattr(module, "get_tiles"):
        tiles = functools.partial(module.get_tiles, h_size=SMALL_TILE, w_size=SMALL_TILE)
        monkeypatch.setattr(module, "get_tiles", tiles)
    if script.adapt:
        script.adapt(module, root, monkeypatch)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    module.main()


def _mess_items(script, root, split):
    """MESS's evaluated items: key -> (image file, label file), paired by stem."""
    folder = root / script.folder
    images = folder / script.images.format(split=split)
    labels = folder / script.labels.format(split=split)
    items = {}
    for label in sorted(labels.glob(f"*{script.label_suffix}")):
        key = label.name[: -len(script.label_suffix)]
        image = images / f"{key}{script.image_suffix}"
        if image.exists():
            items[key] = (image, label)
    return items


def _our_items(name, script, data_dir, split):
    source = tfds.data_source(
        mess.get_spec(name).tfds_name,
        split=split,
        data_dir=data_dir,
        decoders={"image": tfds.decode.SkipDecoding()},  # the stored bytes
    )
    key = script.key or (lambda file_name: posixpath.splitext(posixpath.basename(file_name))[0])
    items = {key(ex["file_name"].decode()): ex for ex in (source[i] for i in range(len(source)))}
    assert len(items) == len(source)
    return items


def _rgb(data):
    # detectron2's read_image: PIL, converted to RGB.
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_builder_equals_mess_preparation(name, tmp_path, monkeypatch):
    spec = mess.get_spec(name)
    script = SCRIPTS[name]
    if spec.tile_size is not None:
        monkeypatch.setattr(
            mess.builder_class(name), "SPEC", dataclasses.replace(spec, tile_size=SMALL_TILE)
        )
    manual = tmp_path / "manual"
    fakes()[name](manual)
    mess.build(name, manual, data_dir=tmp_path / "data")
    ours = _our_items(name, script, tmp_path / "data", spec.eval_split)

    root = tmp_path / "datasets"
    script.layout(manual, root)
    monkeypatch.chdir(tmp_path)
    _run_mess_script(name, script, root, monkeypatch)
    theirs = _mess_items(script, root, spec.eval_split)

    assert sorted(ours) == sorted(theirs) and theirs
    for key, (image_path, label_path) in theirs.items():
        example = ours[key]
        label = np.array(Image.open(label_path), dtype=int)  # detectron2's sem_seg loading
        np.testing.assert_array_equal(example["label"], label, err_msg=key)
        if spec.resave_jpeg:
            assert example["image"] == image_path.read_bytes(), key
        else:
            np.testing.assert_array_equal(
                _rgb(example["image"]), _rgb(image_path.read_bytes()), err_msg=key
            )
