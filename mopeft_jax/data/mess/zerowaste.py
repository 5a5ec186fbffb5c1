"""ZeroWaste-f (MESS: Engineering): recycling conveyor belt, 4 materials + background.

``splits_final_deblurred/<split>/data/*.PNG`` with ``sem_seg/*.PNG`` class indices.
"""

from mopeft_jax.data.mess import base

CLASSES = ("background or trash", "rigid plastic", "cardboard", "metal", "soft plastic")


def _splits(src):
    return {
        split: base.stem_pairs(
            src["data"],
            f"splits_final_deblurred/{split}/data",
            src["data"],
            f"splits_final_deblurred/{split}/sem_seg",
            base.first_channel,
            label_name="{stem}.PNG",
        )
        for split in ("train", "val", "test")
    }


SPEC = base.register(
    base.MessSpec(
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
            base.Resource(
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
