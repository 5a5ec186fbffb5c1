"""PST900 (MESS: Engineering): subterranean RGB-thermal images, 4 objects + background.

MESS feeds the thermal images (8-bit grey, replicated to three channels here) and evaluates
``test``; labels are class indices already.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = ("background", "fire extinguisher", "backpack", "drill", "human")


def _splits(src):
    return {
        split: stem_pairs(
            src["data"], f"{split}/thermal", src["data"], f"{split}/labels", first_channel
        )
        for split in ("train", "test")
    }


SPEC = register(
    MessSpec(
        name="pst900",
        title="PST900",
        domain="Engineering",
        homepage="https://github.com/ShreyasSkandanS/pst900_thermal_rgb",
        description="Thermal images from subterranean environments (DARPA SubT artefacts).",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="pst900_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("PST900_RGBT_Dataset.zip", "PST900_RGBT_Dataset"),
                markers=("train/thermal", "train/labels", "test/thermal", "test/labels"),
                description="PST900_RGBT_Dataset.zip, Google Drive id "
                "1hZeM-MvdUC_Btyok7mdF00RV-InbAadm (linked from the dataset page).",
            ),
        ),
        splits=_splits,
        notes="Images are the thermal channel as RGB (grey replicated), as MESS evaluates.",
    )
)
