"""Corrosion CS (MESS: Engineering): steel structures, three corrosion condition states.

The figshare archive holds ``original/{Train,Test}/images/*.jpeg`` and ``masks/*.png`` with class
indices already (0 others, 1 fair, 2 poor, 3 severe corrosion).
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "others",
    "steel with fair corrosion",
    "steel with poor corrosion",
    "steel with severe corrosion",
)


def _splits(src):
    return {
        split.lower(): stem_pairs(
            src["data"],
            f"original/{split}/images",
            src["data"],
            f"original/{split}/masks",
            first_channel,
        )
        for split in ("Train", "Test")
    }


SPEC = register(
    MessSpec(
        name="corrosion_cs",
        title="Corrosion CS",
        domain="Engineering",
        homepage="https://figshare.com/articles/dataset/Corrosion_Condition_State_Semantic_"
        "Segmentation_Dataset/16624663",
        description="Bridge inspection images with corrosion condition states of steel.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="corrosion_cs_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=(
                    "31729733",
                    "31729733.zip",
                    "Corrosion Condition State Classification",
                    "Corrosion Condition State Classification.zip",
                    "*orrosion*.zip",
                ),
                markers=("original/Train/images", "original/Train/masks", "original/Test/masks"),
                description="The figshare file https://figshare.com/ndownloader/files/31729733 "
                "(saved as 31729733, or renamed *.zip).",
            ),
        ),
        splits=_splits,
    )
)
