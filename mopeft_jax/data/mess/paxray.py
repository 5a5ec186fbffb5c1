"""PAXRay-4 (MESS: Medical Sciences): chest X-rays, four binary tasks.

PAXRay's masks overlap (166 labels per image, ``labels/*.npy`` of shape ``(166, H, W)``), so MESS
evaluates four binary datasets, one per super-class: lungs (label 0), mediastinum (10), bones
(24) and diaphragm (163); PAXRay-4 is the mean of the four. Each is its own builder here
(``paxray_lungs``, ...). Splits as ``paxray.json`` lists them.
"""

import functools
import json

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

# Builder suffix -> (class name as MESS names it, index of the label in PAXRay's 166).
TARGETS = {
    "lungs": ("lung", 0),
    "mediastinum": ("mediastinum", 10),
    "bones": ("bones", 24),
    "diaphragm": ("diaphragm", 163),
}


def _channel(src, npy_path, index):
    """One channel of a ``(C, H, W)`` .npy, reading only that channel's bytes."""
    with src.open(npy_path) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # no public reader of later headers: load the whole array
            f.seek(0)
            return np.load(f)[index]
        if fortran or len(shape) != 3:
            raise ValueError(f"{npy_path}: expected a C-ordered (C, H, W) array, got {shape}")
        plane = shape[1] * shape[2] * dtype.itemsize
        f.seek(index * plane, 1)  # forward seek: the planes before are skipped, not kept
        data = f.read(plane)
    return np.frombuffer(data, dtype).reshape(shape[1:])


def _read(src, image_path, npy_path, index):
    return src.image(image_path), _channel(src, npy_path, index).astype(np.uint8)


def _make_splits(index):
    def splits(src):
        data = src["data"]
        index_file = json.loads(data.text("paxray.json"))
        out = {}
        for split in ("train", "val", "test"):
            if split not in index_file:
                continue
            pairs = []
            for entry in index_file[split]:
                image_path, npy_path = entry["image"], entry["target"]
                if data.exists(image_path) and data.exists(npy_path):
                    read = functools.partial(_read, data, image_path, npy_path, index)
                    name = image_path.split("/")[-1]
                    pairs.append(Pair(key=name, file_name=name, read=read))
            out[split] = pairs
        return out

    return splits


SPECS = {
    target: register(
        MessSpec(
            name=f"paxray_{target}",
            title=f"PAXRay-{target.capitalize()}",
            domain="Medical Sciences",
            homepage="https://constantinseibold.github.io/paxray/",
            description=f"Chest X-rays (projected CT labels), binary: {class_name} vs. others.",
            classes=("others", class_name),
            background_class=0,
            eval_split="test",
            mess_name=f"paxray_sem_seg_test_{target}",
            resources=(
                Resource(
                    key="data",
                    names=("paxray_dataset.zip", "paxray_dataset"),
                    markers=("paxray.json", "images", "labels"),
                    description="paxray_dataset.zip, Google Drive file "
                    "19HPPhKf9TDv4sO3UV-nI3Jhi4nCv_Zyc (linked from the dataset page).",
                ),
            ),
            splits=_make_splits(index),
        )
    )
    for target, (class_name, index) in TARGETS.items()
}
