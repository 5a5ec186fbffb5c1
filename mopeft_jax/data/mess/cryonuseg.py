"""CryoNuSeg (MESS: Medical Sciences): H&E cryosections, nuclei vs. others.

Test-only, as in MESS: the 30 ``tissue images/*.tif`` with annotator 1's (second round) binary
masks (255 = nucleus). There is no train split of its own: train on a related nuclei dataset
instead, e.g. MoNuSeg (the builder ``mess_monuseg``).
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("others", "nuclei in cells")

_ANNOTATOR = "Annotator 1 (biologist second round of manual marks up)"
_MASK_DIR = f"{_ANNOTATOR}/{_ANNOTATOR}/mask binary"


def _read(src, image_path, mask_path):
    # MESS divides by 255 and truncates: only 255 is a nucleus.
    return src.image(image_path), (first_channel(src.image(mask_path)) == 255).astype(np.uint8)


def _splits(sources):
    src = sources["data"]
    pairs = []
    for image_path in src.list("tissue images", (".tif", ".tiff")):
        stem = image_path.split("/")[-1].rsplit(".", 1)[0]
        mask_path = f"{_MASK_DIR}/{stem}.png"
        if src.exists(mask_path):
            read = functools.partial(_read, src, image_path, mask_path)
            pairs.append(Pair(key=stem, file_name=f"{stem}.png", read=read))
    return {"test": pairs}


SPEC = register(
    MessSpec(
        name="cryonuseg",
        title="CryoNuSeg",
        domain="Medical Sciences",
        homepage="https://www.kaggle.com/datasets/ipateam/segmentation-of-nuclei-in-"
        "cryosectioned-he-images",
        description="H&E-stained cryosectioned tissue images with nucleus masks.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="cryonuseg_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("archive.zip", "archive", "CryoNuSeg", "*cryosectioned*.zip"),
                markers=("tissue images", _MASK_DIR),
                description="The Kaggle download (archive.zip) of the dataset page.",
            ),
        ),
        splits=_splits,
        notes="Test split only (no train split of its own); train on mess_monuseg.",
    )
)
