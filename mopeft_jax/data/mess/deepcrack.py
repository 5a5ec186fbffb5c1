"""DeepCrack (MESS: Engineering): pavement/concrete surfaces, cracks vs. background.

``DeepCrack.zip`` (in the dataset's git repository, ``dataset/DeepCrack.zip``) holds
``{train,test}_img/*.jpg`` and ``{train,test}_lab/*.png``; as in MESS, a pixel is "crack" where
the label is 255.
"""

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = ("concrete or asphalt", "crack")


def _label(image):
    # MESS divides by 255 and truncates to uint8: only 255 is a crack.
    return (first_channel(image) == 255).astype(np.uint8)


def _splits(src):
    return {
        split: stem_pairs(src["data"], f"{split}_img", src["data"], f"{split}_lab", _label)
        for split in ("train", "test")
    }


SPEC = register(
    MessSpec(
        name="deepcrack",
        title="DeepCrack",
        domain="Engineering",
        homepage="https://github.com/yhlleo/DeepCrack",
        description="Crack images of concrete and asphalt surfaces with crack masks.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="deepcrack_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("DeepCrack.zip", "DeepCrack/dataset/DeepCrack.zip", "DeepCrack"),
                markers=("train_img", "train_lab", "test_img", "test_lab"),
                description="dataset/DeepCrack.zip of https://github.com/yhlleo/DeepCrack "
                "(or a clone of the repository, or the zip unpacked).",
            ),
        ),
        splits=_splits,
    )
)
