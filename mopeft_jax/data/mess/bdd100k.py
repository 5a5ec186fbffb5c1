"""BDD100K (MESS: General): driving scenes, the 19 Cityscapes classes, no background class.

The 10K images and the semantic-segmentation labels come as two zips. Labels are the
``labels/sem_seg/colormaps`` PNGs, palette images whose palette indices are the train ids (255
ignore), as MESS reads them. MESS evaluates ``val``; a ``dev`` split is carved from ``train``.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


def _palette_indices(image):
    # A palette PNG decodes to its indices, which are the train ids; RGB would mean a wrong file.
    if image.mode not in ("P", "L"):
        raise ValueError(f"expected a palette/grey label PNG, got mode {image.mode}")
    return first_channel(image)


def _splits(src):
    return {
        split: stem_pairs(
            src["images"],
            f"images/10k/{split}",
            src["labels"],
            f"labels/sem_seg/colormaps/{split}",
            _palette_indices,
            image_suffixes=(".jpg",),
        )
        for split in ("train", "val")
    }


SPEC = register(
    MessSpec(
        name="bdd100k",
        title="BDD100K",
        domain="General",
        homepage="https://bdd-data.berkeley.edu/",
        description="Driving scenes (BDD100K 10K subset), semantic segmentation, 19 classes.",
        classes=CLASSES,
        background_class=None,
        eval_split="val",
        mess_name="bdd100k_sem_seg_val",
        resources=(
            Resource(
                key="images",
                names=("bdd100k_images_10k.zip", "bdd100k_images_10k", "bdd100k"),
                markers=("images/10k/train", "images/10k/val"),
                description='"10K Images" on https://bdd-data.berkeley.edu/ (after login).',
            ),
            Resource(
                key="labels",
                names=(
                    "bdd100k_sem_seg_labels_trainval.zip",
                    "bdd100k_sem_seg_labels_trainval",
                    "bdd100k",
                ),
                markers=("labels/sem_seg/colormaps/train", "labels/sem_seg/colormaps/val"),
                description='"Segmentation" labels on https://bdd-data.berkeley.edu/.',
            ),
        ),
        splits=_splits,
        dev_fraction=0.1,
        download="Log in at https://bdd-data.berkeley.edu/ and download both zips.",
    )
)
