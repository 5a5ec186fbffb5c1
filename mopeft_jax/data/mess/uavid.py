"""UAVid (MESS: Earth Monitoring): oblique UAV video frames, 7 classes + "others".

``uavid_<split>/<seq>/Images/*.png`` with colour-coded ``Labels``; colours map to classes as in
MESS (which converts the colours to grey first; the eight colours give the same classes either
way). Frames are cut into 1024 px tiles (padding ignored). MESS evaluates ``val``; ``dev`` is
carved from ``train`` by sequence, since frames of one sequence are near duplicates.
"""

import numpy as np

from mopeft_jax.data.mess import base

CLASSES = (
    "others",
    "building",
    "road",
    "tree",
    "grass",
    "moving car",
    "parked car",
    "humans",
)

_COLOURS = {
    (0, 0, 0): 0,  # background clutter
    (128, 0, 0): 1,  # building
    (128, 64, 128): 2,  # road
    (0, 128, 0): 3,  # tree
    (128, 128, 0): 4,  # low vegetation
    (64, 0, 128): 5,  # moving car
    (192, 0, 192): 6,  # static car
    (64, 64, 0): 7,  # human
}


def _label(image):
    return base.rgb_map(np.asarray(image.convert("RGB")), _COLOURS)


def _splits(src):
    data = src["data"]
    splits = {}
    for split in ("train", "val"):
        pairs = []
        for seq in sorted({p.split("/")[1] for p in data.glob(f"uavid_{split}/*/Images")}):
            pairs += base.stem_pairs(
                data,
                f"uavid_{split}/{seq}/Images",
                data,
                f"uavid_{split}/{seq}/Labels",
                _label,
                image_suffixes=(".png",),
                group=lambda rel, seq=seq: seq,
                file_name=lambda rel, seq=seq: f"{seq}_{rel}",
            )
        splits[split] = pairs
    return splits


SPEC = base.register(
    base.MessSpec(
        name="uavid",
        title="UAVid",
        domain="Earth Monitoring",
        homepage="https://uavid.nl",
        description="Oblique UAV video frames of urban scenes, 8 classes, 1024 px tiles.",
        classes=CLASSES,
        background_class=0,
        eval_split="val",
        mess_name="uavid_sem_seg_val",
        resources=(
            base.Resource(
                key="data",
                names=(
                    "uavid_v1.5_official_release_image.zip",
                    "uavid_v1.5_official_release_image",
                    "uavid_v1.5",
                ),
                markers=("uavid_train", "uavid_val"),
                description="uavid_v1.5_official_release_image.zip from https://uavid.nl "
                '("Semantic Labelling with Images Only", after registering).',
            ),
        ),
        splits=_splits,
        dev_fraction=0.1,
        tile_size=1024,
        notes="Colours outside the eight UAVid colours are ignored.",
    )
)
