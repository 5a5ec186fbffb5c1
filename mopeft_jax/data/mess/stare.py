"""STARE (training source for MESS's CHASE DB1): retinal fundus images, blood vessels vs. others.

STARE (STructured Analysis of the Retina) has about 400 fundus photographs (700 x 605 px); 20 of
them have blood-vessel annotations by two observers. MESS does not evaluate it; it is here because
CHASE DB1, which MESS tests on, has no train split: train on STARE (and DRIVE, ``mess_drive``) and
evaluate on ``mess_chase_db1``.

Splits: ``train`` only, the 20 annotated images with Adam Hoover's annotations
(``labels-ah.tar``, the set commonly used for training). Images and annotations are gzipped PPMs
(``im0001.ppm.gz``, ``im0001.ah.ppm.gz``); a pixel is a vessel where the annotation is not black.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import nonblack, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = ("others", "blood vessels")  # as chase_db1


def _label_name(stem):
    # The image im0001.ppm.gz (stem "im0001.ppm") is annotated in im0001.ah.ppm.gz.
    return f"{stem.split('.')[0]}.ah.ppm.gz"


def _splits(sources):
    pairs = stem_pairs(
        sources["images"],
        "",
        sources["labels"],
        "",
        nonblack,
        label_name=_label_name,
        image_suffixes=(".ppm.gz",),
    )
    return {"train": pairs}


_PAGE = "https://cecas.clemson.edu/~ahoover/stare/probing/"

SPEC = register(
    MessSpec(
        name="stare",
        title="STARE",
        domain="Medical Sciences",
        homepage="https://cecas.clemson.edu/~ahoover/stare/",
        description="Retinal fundus images with blood-vessel annotations (Hoover's set); a "
        "training source for CHASE DB1.",
        classes=CLASSES,
        background_class=0,
        eval_split="train",
        mess_name=None,
        train_source_for=("chase_db1",),
        resources=(
            Resource(
                key="images",
                names=("stare-images.tar", "stare-images"),
                markers=("im*.ppm.gz",),
                description=f"The images, {_PAGE}stare-images.tar (the annotated ones are used).",
            ),
            Resource(
                key="labels",
                names=("labels-ah.tar", "labels-ah"),
                markers=("im*.ah.ppm.gz",),
                description=f"Adam Hoover's vessel annotations, {_PAGE}labels-ah.tar.",
            ),
        ),
        splits=_splits,
        notes="Not a MESS dataset: a training source for CHASE DB1 (mess_chase_db1). Train split "
        "only; the second observer's annotations (labels-vk.tar) are not used.",
    )
)
