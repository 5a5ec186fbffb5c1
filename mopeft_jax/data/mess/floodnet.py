"""FloodNet (MESS: Earth Monitoring): post-flood UAV images, 9 classes + background.

The supervised release (``FloodNet-Supervised_v1.0``: ``<split>/<split>-org-img/*.jpg`` and
``<split>/<split>-label-img/*_lab.png``, class indices already) is downloaded from Google Drive,
as the folder or as the zip(s) Drive makes of it. Images are cut into 1024 px tiles (padding
ignored), as MESS does.
"""

from mopeft_jax.data.mess import base

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


def _splits(src):
    return {
        split: base.stem_pairs(
            src["data"],
            f"{split}/{split}-org-img",
            src["data"],
            f"{split}/{split}-label-img",
            base.first_channel,
            label_name="{stem}_lab.png",
            image_suffixes=(".jpg",),
        )
        for split in ("train", "val", "test")
    }


SPEC = base.register(
    base.MessSpec(
        name="floodnet",
        title="FloodNet",
        domain="Earth Monitoring",
        homepage="https://github.com/BinaLab/FloodNet-Supervised_v1.0",
        description="UAV images after Hurricane Harvey, 10 classes, 1024 px tiles.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="floodnet_sem_seg_test",
        resources=(
            base.Resource(
                key="data",
                names=("FloodNet-Supervised_v1.0", "FloodNet-Supervised_v1.0*.zip"),
                markers=(
                    "train/train-org-img",
                    "train/train-label-img",
                    "val/val-org-img",
                    "val/val-label-img",
                    "test/test-org-img",
                    "test/test-label-img",
                ),
                description="The folder FloodNet-Supervised_v1.0 from https://drive.google.com/"
                "drive/folders/1leN9eWVQcvWDVYwNb2GCo5ML_wBEycWD (or Drive's zip parts of it).",
            ),
        ),
        splits=_splits,
        tile_size=1024,
    )
)
