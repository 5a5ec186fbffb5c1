"""SUIM (MESS: Agriculture and Biology): underwater scenes, 7 classes + waterbody.

Masks are RGB bitmaps whose three channels are on/off bits of the class (``RGB = 000`` waterbody,
``001`` divers, ..., ``111`` sea-floor), so the class is ``4 R + 2 G + B`` of the thresholded
channels: the same as MESS's colour table on the clean test masks, and robust to the off colours
of some ``train_val`` masks. MESS evaluates ``test`` and needs only ``TEST.zip``: each split is
built where its archive is present.
"""

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "background (waterbody)",
    "human diver",
    "aquatic plants and sea-grass",
    "wrecks and ruins",
    "robots (auvs/rovs/instruments)",
    "reefs and invertebrates",
    "fish and vertebrates",
    "sea-floor and rocks",
)


def _label(image):
    bits = np.asarray(image.convert("RGB")) > 127
    return (4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]).astype(np.uint8)


def _splits(src):
    return {
        split: stem_pairs(
            src[split],
            f"{folder}/images",
            src[split],
            f"{folder}/masks",
            _label,
            label_name="{stem}.bmp",
            image_suffixes=(".jpg",),
        )
        for split, folder in (("train", "train_val"), ("test", "TEST"))
        if split in src
    }


SPEC = register(
    MessSpec(
        name="suim",
        title="SUIM",
        domain="Agriculture and Biology",
        homepage="https://irvlab.cs.umn.edu/resources/suim-dataset",
        description="Underwater images of divers, robots, fish, reefs, plants, wrecks, sea floor.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="suim_sem_seg_test",
        resources=(
            Resource(
                key="train",
                names=("train_val.zip", "train_val"),
                markers=("train_val/images", "train_val/masks"),
                splits=("train",),
                description="train_val.zip from the SUIM Google Drive folder "
                "https://drive.google.com/drive/folders/10KMK0rNB43V2g30NcA1RYipL535DuZ-h",
            ),
            Resource(
                key="test",
                names=("TEST.zip", "TEST"),
                markers=("TEST/images", "TEST/masks"),
                splits=("test",),
                description="TEST.zip from the same Google Drive folder.",
            ),
        ),
        splits=_splits,
    )
)
