"""FloodNet (MESS: Earth Monitoring): post-flood UAV images, 9 classes + background.

The supervised release (``FloodNet-Supervised_v1.0``: ``<split>/<split>-org-img/*.jpg`` and
``<split>/<split>-label-img/*_lab.png``, class indices already) is downloaded from Google Drive,
as the folder or as the zip(s) Drive makes of it. MESS evaluates ``test`` and needs only its
folders: each split is built where its folders are present. Images are cut into 1024 px tiles
(padding ignored) and each tile re-saved as JPEG, as MESS's prepare_floodnet.py does. MESS's
CoI-mIoU averages over the two flooded classes only.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "background",
    "building-flooded",
    "building-non-flooded",
    "road-flooded",
    "road-non-flooded",
    "water",
    "tree",
    "vehicle",
    "pool",
    "grass",
)


_SPLITS = ("train", "val", "test")


def _splits(src):
    return {
        split: stem_pairs(
            src[split],
            f"{split}/{split}-org-img",
            src[split],
            f"{split}/{split}-label-img",
            first_channel,
            label_name="{stem}_lab.png",
            image_suffixes=(".jpg",),
        )
        for split in _SPLITS
        if split in src
    }


_DRIVE = "https://drive.google.com/drive/folders/1leN9eWVQcvWDVYwNb2GCo5ML_wBEycWD"


SPEC = register(
    MessSpec(
        name="floodnet",
        title="FloodNet",
        domain="Earth Monitoring",
        homepage="https://github.com/BinaLab/FloodNet-Supervised_v1.0",
        description="UAV images after Hurricane Harvey, 10 classes, 1024 px tiles.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="floodnet_sem_seg_test",
        resources=tuple(
            Resource(
                key=split,
                names=("FloodNet-Supervised_v1.0", "FloodNet-Supervised_v1.0*.zip"),
                # Drive zips a folder in parts, each with some split folders: the first marker
                # locates the root in every part, the others must be in one of them.
                markers=(
                    "train|val|test",
                    f"{split}/{split}-org-img",
                    f"{split}/{split}-label-img",
                ),
                description=f"The folder FloodNet-Supervised_v1.0 from {_DRIVE} (or Drive's zip "
                f"parts of it), with its {split}/ folders {split}-org-img and {split}-label-img.",
                splits=(split,),
            )
            for split in _SPLITS
        ),
        splits=_splits,
        tile_size=1024,
        resave_jpeg=True,
        classes_of_interest=(1, 3),  # building-flooded, road-flooded (MESS's registration)
        notes="The tiles are the JPEGs that MESS's prepare_floodnet.py writes and evaluates "
        "(PIL's default, quality 75), not the downloaded pixels: they differ by about 1 grey level "
        "on average, and by up to about 50 next to the padded tile borders.",
    )
)
