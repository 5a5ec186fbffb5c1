"""Kvasir-Instrument (MESS: Medical Sciences): endoscopy images, tools vs. others.

``kvasir-instrument.zip`` holds ``images.tar.gz``, ``masks.tar.gz`` and the split lists
``train.txt``/``test.txt``. As in MESS, a mask pixel is "tool" where its first channel is 255.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("others", "tool")


def _read(images, image_path, masks, mask_path):
    return images.read(image_path), (first_channel(masks.image(mask_path)) == 255).astype(np.uint8)


def _splits(src):
    data = src["data"]
    images = data.nested("images.tar.gz", markers=("images/*.jpg",))
    masks = data.nested("masks.tar.gz", markers=("masks/*.png",))
    splits = {}
    for split in ("train", "test"):
        pairs = []
        for image_id in data.text(f"{split}.txt").split():
            image_path, mask_path = f"images/{image_id}.jpg", f"masks/{image_id}.png"
            if images.exists(image_path) and masks.exists(mask_path):
                read = functools.partial(_read, images, image_path, masks, mask_path)
                pairs.append(Pair(key=image_id, file_name=f"{image_id}.jpg", read=read))
        splits[split] = pairs
    return splits


SPEC = register(
    MessSpec(
        name="kvasir_instrument",
        title="Kvasir-Instrument",
        domain="Medical Sciences",
        homepage="https://datasets.simula.no/kvasir-instrument/",
        description="Gastrointestinal endoscopy images with diagnostic/therapeutic tools.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="kvasir_instrument_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("kvasir-instrument.zip", "kvasir-instrument"),
                markers=(
                    "train.txt",
                    "test.txt",
                    "images.tar.gz|images",
                    "masks.tar.gz|masks",
                ),
                description="kvasir-instrument.zip, https://datasets.simula.no/downloads/"
                "kvasir-instrument.zip",
            ),
        ),
        splits=_splits,
    )
)
