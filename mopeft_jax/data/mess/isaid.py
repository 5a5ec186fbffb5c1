"""iSAID (MESS: Earth Monitoring): aerial images, 15 object classes + "others".

Images (DOTA, ``images/P0000.png`` in ``part*.zip``) and colour-coded semantic masks
(``images/P0000_instance_color_RGB.png`` in ``Semantic_masks/images.zip``) come per split in
folders as the dataset's Google Drive has them. Colours map to classes as in MESS
(:func:`~mopeft_jax.data.mess.labels.rgb_map`); images are cut into 1024 px tiles (padding
ignored). MESS evaluates ``val``, and needs only the ``val`` folders: each split is built where its
folders are present. ``dev`` is carved from ``train`` by source image, so that tiles of one image
stay together.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import rgb_map
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = (
    "others",
    "boat",
    "storage tank",
    "baseball diamond",
    "tennis court",
    "basketball court",
    "running track field",
    "bridge",
    "truck or bus",
    "car",
    "helicopter",
    "swimming pool",
    "traffic circle",
    "soccer field",
    "air plane",
    "pier",
)

_COLOURS = {
    (0, 0, 0): 0,  # unlabeled
    (0, 0, 63): 1,  # ship
    (0, 63, 63): 2,  # storage tank
    (0, 63, 0): 3,  # baseball diamond
    (0, 63, 127): 4,  # tennis court
    (0, 63, 191): 5,  # basketball court
    (0, 63, 255): 6,  # ground track field
    (0, 127, 63): 7,  # bridge
    (0, 127, 127): 8,  # large vehicle
    (0, 0, 127): 9,  # small vehicle
    (0, 0, 191): 10,  # helicopter
    (0, 0, 255): 11,  # swimming pool
    (0, 191, 127): 12,  # roundabout
    (0, 127, 191): 13,  # soccer ball field
    (0, 127, 255): 14,  # plane
    (0, 100, 155): 15,  # harbor
}


def _read(images, image_path, masks, mask_path):
    colour = masks.image(mask_path).convert("RGB")
    return images.read(image_path), rgb_map(np.asarray(colour), _COLOURS, len(CLASSES))


def _pairs(images, masks):
    pairs = []
    for mask_path in masks.list("images", ".png"):
        # "P0000_instance_color_RGB.png": the image id is the part before the first "_".
        image_id = mask_path.split("/")[-1].split("_")[0]
        image_path = f"images/{image_id}.png"
        if images.exists(image_path):
            read = functools.partial(_read, images, image_path, masks, mask_path)
            pairs.append(Pair(key=image_id, file_name=f"{image_id}.png", read=read))
    return pairs


def _splits(src):
    return {
        split: _pairs(src[f"{split}_images"], src[f"{split}_masks"])
        for split in ("train", "val")
        if f"{split}_images" in src and f"{split}_masks" in src
    }


def _resource(split, kind, folder, archives, description):
    # Each Drive folder as downloaded (its zip(s)), or unpacked in place (an images/ folder).
    return Resource(
        key=f"{split}_{kind}",
        names=(f"{split}/{folder}/{archives}", f"{split}/{folder}/images"),
        markers=("images",),
        description=description,
        splits=(split,),
    )


_DRIVE = "the iSAID Google Drive linked from https://captain-whu.github.io/iSAID/dataset.html"

SPEC = register(
    MessSpec(
        name="isaid",
        title="iSAID",
        domain="Earth Monitoring",
        homepage="https://captain-whu.github.io/iSAID/dataset.html",
        description="Aerial images (DOTA) with 15 object classes, cut into 1024 px tiles.",
        classes=CLASSES,
        background_class=0,
        eval_split="val",
        mess_name="isaid_sem_seg_val",
        resources=(
            _resource(
                "train",
                "images",
                "images",
                "part*.zip",
                f"train/images/part1.zip, part2.zip, part3.zip from {_DRIVE}.",
            ),
            _resource(
                "train",
                "masks",
                "Semantic_masks",
                "images.zip",
                f"train/Semantic_masks/images.zip from {_DRIVE}.",
            ),
            _resource(
                "val", "images", "images", "part*.zip", f"val/images/part1.zip from {_DRIVE}."
            ),
            _resource(
                "val",
                "masks",
                "Semantic_masks",
                "images.zip",
                f"val/Semantic_masks/images.zip from {_DRIVE}.",
            ),
        ),
        splits=_splits,
        dev_fraction=0.1,
        tile_size=1024,
        download="Keep the Drive's folder layout: <manual_dir>/train/images/part1.zip, ...",
        notes="As MESS's prepare_isaid.py, a colour outside the iSAID palette keeps its red value "
        "((0, 50, 50) is class 0, (10, 50, 50) class 10); a red value that is no class (16-254), "
        "for which MESS writes a label its evaluator cannot count, is ignored (255) here.",
    )
)
