"""ZeroWaste-f (MESS: Engineering): recycling conveyor belt, 4 materials + background.

``splits_final_deblurred/<split>/data/*.PNG`` with ``sem_seg/*.PNG`` class indices.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = ("background or trash", "rigid plastic", "cardboard", "metal", "soft plastic")


def _splits(src):
    return {
        split: stem_pairs(
            src["data"],
            f"splits_final_deblurred/{split}/data",
            src["data"],
            f"splits_final_deblurred/{split}/sem_seg",
            first_channel,
            label_name="{stem}.PNG",
        )
        for split in ("train", "val", "test")
    }


SPEC = register(
    MessSpec(
        name="zerowaste",
        title="ZeroWaste-f",
        domain="Engineering",
        homepage="http://ai.bu.edu/zerowaste/",
        description="Cluttered waste on a conveyor belt of a recycling facility.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="zerowaste_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("zerowaste-f-final.zip", "zerowaste-f-final", "zerowaste-f"),
                markers=(
                    "splits_final_deblurred/train/data",
                    "splits_final_deblurred/train/sem_seg",
                    "splits_final_deblurred/test/sem_seg",
                ),
                description="zerowaste-f-final.zip, https://zenodo.org/record/6412647/files/"
                "zerowaste-f-final.zip",
            ),
        ),
        splits=_splits,
    )
)
