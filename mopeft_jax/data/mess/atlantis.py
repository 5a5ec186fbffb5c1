"""ATLANTIS (MESS: General): waterbody scenes, 56 classes, no background class.

The images and masks live in the dataset's git repository (``atlantis/images/<split>/<class
folder>/*.jpg``, masks likewise as PNG). Mask values 1..56 are the classes (0..55 here); 0 is
unlabelled and becomes the ignore label, as in MESS. Images are stored as MESS's
prepare_atlantis.py re-saves them (PIL's JPEG, quality 75), which is what MESS evaluates.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, lut_map, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "bicycle", "boat", "breakwater", "bridge", "building", "bus", "canal", "car", "cliff",
    "culvert", "cypress tree", "dam", "ditch", "fence", "fire hydrant", "fjord", "flood",
    "glaciers", "hot spring", "lake", "levee", "lighthouse", "mangrove", "marsh", "motorcycle",
    "offshore platform", "parking meter", "person", "pier", "pipeline", "pole", "puddle",
    "rapids", "reservoir", "river", "river delta", "road", "sea", "ship", "shoreline",
    "sidewalk", "sky", "snow", "spillway", "swimming pool", "terrain", "traffic sign", "train",
    "truck", "umbrella", "vegetation", "wall", "water tower", "water well", "waterfall",
    "wetland",
)  # fmt: skip

_VALUE_TO_CLASS = {value: value - 1 for value in range(1, len(CLASSES) + 1)}


def _label(image):
    return lut_map(first_channel(image), _VALUE_TO_CLASS)


def _splits(src):
    return {
        split: stem_pairs(
            src["repo"],
            f"images/{split}",
            src["repo"],
            f"masks/{split}",
            _label,
            image_suffixes=(".jpg",),
            recursive=True,
        )
        for split in ("train", "val", "test")
    }


SPEC = register(
    MessSpec(
        name="atlantis",
        title="ATLANTIS",
        domain="General",
        homepage="https://github.com/smhassanerfani/atlantis",
        description="Waterbody images (Flickr) with 56 water-related and other classes.",
        classes=CLASSES,
        background_class=None,
        eval_split="test",
        mess_name="atlantis_sem_seg_test",
        resources=(
            Resource(
                key="repo",
                names=("atlantis", "atlantis-main.zip", "atlantis-master.zip", "atlantis-*"),
                markers=("masks/train", "images/train", "images/val", "images/test"),
                description="A clone of https://github.com/smhassanerfani/atlantis (or its "
                "folder atlantis/atlantis, or GitHub's ZIP of it).",
            ),
        ),
        splits=_splits,
        resave_jpeg=True,
        download="git clone https://github.com/smhassanerfani/atlantis.git <manual_dir>/atlantis",
        notes="Images are the JPEGs MESS's prepare_atlantis.py re-saves (PIL, quality 75) and "
        "evaluates, not the downloaded bytes. Mask values above 56, for which MESS's script "
        "has no class (it fails), are ignored (255).",
    )
)
