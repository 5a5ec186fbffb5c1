"""ISPRS Potsdam (MESS: Earth Monitoring): aerial orthophotos, 5 classes + "others".

``Potsdam.zip`` holds further zips; the IRRG orthophotos (``3_Ortho_IRRG.zip``, as MESS uses)
and the colour-coded labels (``5_Labels_all.zip``) are read. As MESS's prepare_isprs_potsdam.py,
labels are binarised at > 128 (some have graded colours) and mapped to classes by colour, so that a
colour that binarises to black is 0 "road" and magenta is ignored; the clutter class "others" (5)
is the background. The 6000 px tiles are cut into 1024 px tiles (padding ignored). ``test`` holds
MESS's 14 test areas, ``train`` the other 24 labelled ones.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import rgb_map
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("road", "building", "grass", "tree", "car", "others")

_COLOURS = {
    (255, 255, 255): 0,  # impervious surfaces
    (0, 0, 255): 1,  # building
    (0, 255, 255): 2,  # low vegetation
    (0, 255, 0): 3,  # tree
    (255, 255, 0): 4,  # car
    (255, 0, 0): 5,  # clutter/background
}

TEST_AREAS = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15",
    "5_13", "5_14", "5_15", "6_13", "6_14", "6_15", "7_13",
)  # fmt: skip


def _label(image):
    rgb = (np.asarray(image.convert("RGB")) > 128).astype(np.uint8) * 255
    return rgb_map(rgb, _COLOURS, len(CLASSES))


def _read(images, image_path, labels, label_path):
    return images.image(image_path), _label(labels.image(label_path))


def _splits(src):
    data = src["data"]
    images = data.nested("3_Ortho_IRRG.zip", markers=("top_potsdam_*_IRRG.tif",))
    labels = data.nested("5_Labels_all.zip", markers=("top_potsdam_*_label.tif",))
    splits = {"train": [], "test": []}
    for image_path in images.list("", "_IRRG.tif"):
        area_id = image_path.split("/")[-1][: -len("_IRRG.tif")]  # top_potsdam_2_10
        label_path = f"{area_id}_label.tif"
        if not labels.exists(label_path):
            continue
        split = "test" if area_id[len("top_potsdam_") :] in TEST_AREAS else "train"
        read = functools.partial(_read, images, image_path, labels, label_path)
        splits[split].append(Pair(key=area_id, file_name=f"{area_id}.png", read=read))
    return splits


SPEC = register(
    MessSpec(
        name="isprs_potsdam",
        title="ISPRS Potsdam",
        domain="Earth Monitoring",
        homepage="https://www.isprs.org/education/benchmarks/UrbanSemLab/default.aspx",
        description="Aerial IRRG orthophotos of Potsdam, 6 land-cover classes, 1024 px tiles.",
        classes=CLASSES,
        background_class=5,
        eval_split="test",
        mess_name="isprs_potsdam_sem_seg_test_irrg",
        resources=(
            Resource(
                key="data",
                names=("Potsdam.zip", "Potsdam"),
                markers=("5_Labels_all.zip|5_Labels_all", "3_Ortho_IRRG.zip|3_Ortho_IRRG"),
                description="Potsdam.zip from the ISPRS 2D semantic labelling benchmark "
                "(request access on the benchmark page); it holds 3_Ortho_IRRG.zip and "
                "5_Labels_all.zip.",
            ),
        ),
        splits=_splits,
        tile_size=1024,
        notes="As MESS's prepare_isprs_potsdam.py, a colour that binarises (> 128) to black, e.g. "
        "(20, 10, 100), is class 0 (road); one that binarises to magenta is ignored.",
    )
)
