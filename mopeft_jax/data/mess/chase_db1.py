"""CHASE DB1 (MESS: Medical Sciences): retinal fundus images, blood vessels vs. others.

Test-only, as in MESS: of the 28 images (sorted by name) MESS keeps the first 8 out and tests on
the remaining 20, against the first observer's annotation (``*_1stHO.png``). There is no train
split of its own: train on a related retinal-vessel dataset instead, DRIVE or STARE (the
builders ``mess_drive`` and ``mess_stare``). Images are stored as MESS's prepare_chase_db1.py
re-saves them (PIL's JPEG, quality 75), which is what MESS evaluates.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("others", "blood vessels")

_HELD_OUT = 8  # MESS's TRAIN_LEN: the first 8 images are not in its test split


def _read(src, image_path, label_path):
    # The annotations are 1-bit PNGs, which MESS reads as 0/1; "> 0" reads any bit depth so.
    return src.read(image_path), (np.asarray(src.image(label_path)) > 0).astype(np.uint8)


def _splits(sources):
    src = sources["data"]
    pairs = []
    for image_path in src.list("", ".jpg")[_HELD_OUT:]:
        stem = image_path[: -len(".jpg")]
        label_path = f"{stem}_1stHO.png"
        if src.exists(label_path):
            read = functools.partial(_read, src, image_path, label_path)
            pairs.append(Pair(key=stem, file_name=image_path, read=read))
    return {"test": pairs}


SPEC = register(
    MessSpec(
        name="chase_db1",
        title="CHASE DB1",
        domain="Medical Sciences",
        homepage="https://blogs.kingston.ac.uk/retinal/chasedb1/",
        description="Retinal fundus images of children with blood-vessel annotations.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="chase_db1_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("CHASEDB1.zip", "CHASEDB1"),
                markers=("Image_*_1stHO.png",),
                description="CHASEDB1.zip, https://staffnet.kingston.ac.uk/~ku15565/CHASE_DB1/"
                "assets/CHASEDB1.zip",
            ),
        ),
        splits=_splits,
        resave_jpeg=True,
        notes="Test split only (no train split of its own); train on mess_drive or mess_stare. "
        "Images are the JPEGs MESS's prepare_chase_db1.py re-saves (PIL, quality 75) and "
        "evaluates. MESS's script keeps an 8-bit 0/255 annotation's 255 (which its evaluation "
        "then ignores); the real annotations are 1-bit, for which both give 0/1, so that bug is "
        "not copied: any non-zero value is a vessel here.",
    )
)
