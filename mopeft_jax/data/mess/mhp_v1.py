"""LV-MHP v1 (MESS: General): multi-human parsing, 18 body-part/clothing classes + "others".

Every person of an image has its own annotation PNG (``annotations/<id>_<n>_<k>.png``); as in
MESS, an image's label is their pixel-wise maximum. Splits as MESS defines them: ``test`` is
``test_list.txt``, ``train`` the first 3000 names of ``train_list.txt``, ``val`` the rest. Images
are stored as MESS's prepare_mhp_v1.py re-saves them (PIL's JPEG, quality 75), which is what MESS
evaluates; like that script, truncated files are decoded as far as they go.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = (
    "others",
    "hat",
    "hair",
    "sunglasses",
    "upper clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left shoe",
    "right shoe",
    "face",
    "left leg",
    "right leg",
    "left arm",
    "right arm",
    "bag",
    "scarf",
    "torso skin",
)

_NUM_TRAIN = 3000  # MESS keeps 3000 of train_list.txt for training, the rest for validation


def _read(src, image_path, mask_paths):
    # MESS's script sets PIL's LOAD_TRUNCATED_IMAGES for every file it reads.
    masks = [first_channel(src.image(p, allow_truncated=True)) for p in mask_paths]
    return src.image(image_path, allow_truncated=True), np.max(np.stack(masks), axis=0)


def _splits(sources):
    src = sources["data"]

    def names(list_file):
        return [line.strip() for line in src.text(list_file).splitlines() if line.strip()]

    test = set(names("test_list.txt"))
    train = set(names("train_list.txt")[:_NUM_TRAIN])
    masks: dict[str, list[str]] = {}
    for path in src.list("annotations", ".png"):
        # "<image id>_<persons>_<person>.png": match on the id before the first underscore,
        # so that image 1 does not collect the masks of image 10.
        masks.setdefault(path.split("/")[-1].split("_")[0], []).append(path)
    splits = {"train": [], "val": [], "test": []}
    for image_path in src.list("images", ".jpg"):
        name = image_path.split("/")[-1]
        stem = name[: -len(".jpg")]
        if stem not in masks:
            continue
        split = "test" if name in test else "train" if name in train else "val"
        read = functools.partial(_read, src, image_path, masks[stem])
        splits[split].append(Pair(key=name, file_name=name, read=read))
    return splits


SPEC = register(
    MessSpec(
        name="mhp_v1",
        title="MHP v1",
        domain="General",
        homepage="https://github.com/ZhaoJ9014/Multi-Human-Parsing",
        description="Multi-human parsing (LV-MHP v1): body parts and clothing, 19 classes.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="mhp_v1_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("LV-MHP-v1.zip", "LV-MHP-v1"),
                markers=("train_list.txt", "test_list.txt", "images", "annotations"),
                description="LV-MHP-v1.zip, linked from https://github.com/ZhaoJ9014/"
                "Multi-Human-Parsing (Google Drive id 1hTS8QJBuGdcppFAr_bvW2tsD9hW_ptr5).",
            ),
        ),
        splits=_splits,
        resave_jpeg=True,
        notes="Images are the JPEGs MESS's prepare_mhp_v1.py re-saves (PIL, quality 75) and "
        "evaluates. MESS collects an image's annotations with glob(f'{id}*.png'), so image 1 "
        "would also take those of image 10; the real ids do not collide so, and the masks are "
        "matched on the whole id here (the part of the name before the first '_').",
    )
)
