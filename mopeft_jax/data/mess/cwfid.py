"""CWFID (MESS: Agriculture and Biology): carrot field images, crop and weed vs. ground.

The dataset is a git repository: ``images/NNN_image.png`` and colour-coded
``annotations/NNN_annotation.png`` (black ground, red crop, green weed; another colour keeps its
red value, as in MESS).
The split is the dataset's (as MESS lists it); image 28 is in both of its lists, so it stays in
``test`` only, which MESS evaluates.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import rgb_map
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("ground", "crop seedling", "weed")

_COLOURS = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2}

TRAIN_IDS = (
    2, 5, 6, 7, 8, 11, 12, 14, 16, 17, 18, 19, 20, 23, 24, 25, 27, 28, 31, 33,
    34, 36, 37, 38, 40, 41, 42, 43, 45, 46, 49, 50, 51, 52, 53, 55, 56, 57, 58, 59,
)  # fmt: skip
TEST_IDS = (1, 3, 4, 9, 10, 13, 15, 21, 22, 26, 28, 29, 30, 32, 35, 39, 44, 47, 48, 54, 60)


def _read(src, image_path, label_path):
    colour = np.asarray(src.image(label_path).convert("RGB"))
    return src.read(image_path), rgb_map(colour, _COLOURS, len(CLASSES))


def _splits(sources):
    src = sources["repo"]
    splits = {}
    train_ids = [i for i in TRAIN_IDS if i not in TEST_IDS]  # no test image in training
    for split, ids in (("train", train_ids), ("test", TEST_IDS)):
        pairs = []
        for i in ids:
            image_path, label_path = (
                f"images/{i:03d}_image.png",
                f"annotations/{i:03d}_annotation.png",
            )
            if src.exists(image_path) and src.exists(label_path):
                read = functools.partial(_read, src, image_path, label_path)
                pairs.append(Pair(key=f"{i:03d}", file_name=image_path, read=read))
        splits[split] = pairs
    return splits


SPEC = register(
    MessSpec(
        name="cwfid",
        title="CWFID",
        domain="Agriculture and Biology",
        homepage="https://github.com/cwfid/dataset",
        description="Organic carrot field images with crop and weed annotations.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="cwfid_sem_seg_test",
        resources=(
            Resource(
                key="repo",
                names=("cwfid", "dataset", "dataset-master.zip", "dataset-main.zip", "cwfid*.zip"),
                markers=("annotations/*_annotation.png", "images/*_image.png"),
                description="A clone of https://github.com/cwfid/dataset (or GitHub's ZIP).",
            ),
        ),
        splits=_splits,
        download="git clone https://github.com/cwfid/dataset.git <manual_dir>/cwfid",
        notes="As MESS's prepare_cwfid.py, an annotation colour other than black/red/green keeps "
        "its red value ((0, 0, 255) is ground, (255, 255, 0) ignored); a red value that is no "
        "class (3-254), for which MESS writes a label its evaluator cannot count, is ignored.",
    )
)
