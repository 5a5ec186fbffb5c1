"""UAVid (MESS: Earth Monitoring): oblique UAV video frames, 7 classes + "others".

``uavid_<split>/<seq>/Images/*.png`` with colour-coded ``Labels``. As MESS's prepare_uavid.py,
a label is converted to grey (PIL's ``L``) and the grey values of the eight colours map to the
classes, so any colour of the same grey value takes that class. Frames are cut into 1024 px tiles
(padding ignored). MESS evaluates ``val``; ``dev`` is carved from ``train`` by sequence, since
frames of one sequence are near duplicates.
"""

import numpy as np
from PIL import Image

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import lut_map, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

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


def _grey(colour) -> int:
    return Image.new("RGB", (1, 1), colour).convert("L").getpixel((0, 0))


# MESS's table {0: 0, 34: 5, 38: 1, 57: 7, 75: 3, 79: 6, 90: 2, 113: 4}, derived from the colours.
_GREY_TO_CLASS = {_grey(colour): k for colour, k in _COLOURS.items()}


def _label(image):
    return lut_map(np.asarray(image.convert("L")), _GREY_TO_CLASS)


def _splits(src):
    data = src["data"]
    splits = {}
    for split in ("train", "val"):
        pairs = []
        for seq in sorted({p.split("/")[1] for p in data.glob(f"uavid_{split}/*/Images")}):
            pairs += stem_pairs(
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


SPEC = register(
    MessSpec(
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
            Resource(
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
        notes="As MESS's prepare_uavid.py, labels are looked up by their grey value, so an off "
        "colour of a class's grey value takes that class ((38, 38, 38) is building); grey values "
        "of no class, on which MESS's script fails, are ignored (255).",
    )
)
