"""Dark Zurich (MESS: General): night-time driving, Cityscapes classes plus "unlabeled".

Only the 50 ``val`` images carry public labels (the training set is unlabelled and the test
labels are withheld), so this builder has the ``val`` split only: there is no labelled data to
carve a ``dev`` split from. Labels: the Cityscapes ``*_gt_labelIds.png`` ids mapped to 0..19 as
MESS does (id 0 "unlabeled" is class 0, the background), and pixels marked invalid in
``*_gt_invGray.png`` ignored.
"""

import functools

from mopeft_jax.data.mess import bdd100k
from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, lut_map
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair
from mopeft_jax.segments import IGNORE_LABEL

CLASSES = ("unlabeled", *bdd100k.CLASSES)  # the 19 Cityscapes classes after "unlabeled"

# Cityscapes label ids of the classes above, in order.
_LABEL_IDS = (0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_ID_TO_CLASS = {label_id: i for i, label_id in enumerate(_LABEL_IDS)}


def _read(src, image_path, label_path, invalid_path):
    label = lut_map(first_channel(src.image(label_path)), _ID_TO_CLASS)
    label[first_channel(src.image(invalid_path)) == 255] = IGNORE_LABEL
    return src.read(image_path), label


def _splits(sources):
    src = sources["val"]
    pairs = []
    for label_path in src.list("gt/val", "_gt_labelIds.png", recursive=True):
        rel = label_path[len("gt/val/") :]
        stem = rel[: -len("_gt_labelIds.png")]
        image_path = f"rgb_anon/val/{stem}_rgb_anon.png"
        invalid_path = label_path.replace("_gt_labelIds.png", "_gt_invGray.png")
        if src.exists(image_path) and src.exists(invalid_path):
            read = functools.partial(_read, src, image_path, label_path, invalid_path)
            pairs.append(Pair(key=rel, file_name=f"{stem}_rgb_anon.png", read=read))
    return {"val": pairs}


SPEC = register(
    MessSpec(
        name="dark_zurich",
        title="Dark Zurich",
        domain="General",
        homepage="https://www.trace.ethz.ch/publications/2019/GCMA_UIoU/",
        description="Night-time driving scenes in Zurich, 19 Cityscapes classes + unlabeled.",
        classes=CLASSES,
        background_class=0,
        eval_split="val",
        mess_name="dark_zurich_sem_seg_val",
        resources=(
            Resource(
                key="val",
                names=("Dark_Zurich_val_anon.zip", "Dark_Zurich_val_anon", "Dark_Zurich"),
                markers=("gt/val", "rgb_anon/val"),
                description="Dark_Zurich_val_anon.zip, https://data.vision.ee.ethz.ch/"
                "csakarid/shared/GCMA_UIoU/Dark_Zurich_val_anon.zip",
            ),
        ),
        splits=_splits,
        notes="No train or dev split: Dark Zurich publishes labels for val only.",
    )
)
