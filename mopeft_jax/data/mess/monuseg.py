"""MoNuSeg 2018 (training source for MESS's CryoNuSeg): H&E tissue images, nuclei vs. others.

MoNuSeg (the MICCAI 2018 Multi-Organ Nucleus Segmentation challenge) has 1000 x 1000 px H&E-stained
tissue images of several organs (TCGA slides at 40x) with every nucleus outlined as a polygon.
MESS does not evaluate it; it is here because CryoNuSeg, which MESS tests on, has no train split:
train on MoNuSeg and evaluate on ``mess_cryonuseg``.

Splits: ``train``, the images of "MoNuSeg 2018 Training Data.zip" (``Tissue Images/*.tif``,
outlines in ``Annotations/*.xml``; the challenge's 30, and 7 more in today's download); ``test``,
the 14 images of ``MoNuSegTestData.zip`` (``.tif`` and ``.xml`` side by side), where that archive
is given. The outlines are Aperio ImageScope XML, one
``<Region>`` of ``<Vertex X= Y=>`` points per nucleus; the label is their filled union (nucleus = 1).
"""

import functools
import posixpath
from xml.etree import ElementTree

import numpy as np
from PIL import Image, ImageDraw

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

CLASSES = ("others", "nuclei in cells")  # as cryonuseg


def _nuclei(xml: bytes, size: tuple[int, int]) -> np.ndarray:
    """The filled union of the outlined nuclei, ``(H, W)`` 0/1, for an image of ``(W, H)``."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for region in ElementTree.fromstring(xml).iter("Region"):
        points = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(points) >= 3:  # fewer points outline no area
            draw.polygon(points, fill=1)
    return np.asarray(mask)


def _read(src, image_path, xml_path):
    image = src.image(image_path)
    return image, _nuclei(src.read(xml_path), image.size)


def _pairs(src, image_dir, xml_dir):
    pairs = []
    for image_path in src.list(image_dir, (".tif", ".tiff")):
        name = posixpath.basename(image_path)
        xml_path = posixpath.join(xml_dir, f"{posixpath.splitext(name)[0]}.xml")
        if src.exists(xml_path):
            read = functools.partial(_read, src, image_path, xml_path)
            pairs.append(Pair(key=name, file_name=name, read=read))
    return pairs


def _splits(sources):
    splits = {}
    if "train" in sources:
        splits["train"] = _pairs(sources["train"], "Tissue Images", "Annotations")
    if "test" in sources:
        splits["test"] = _pairs(sources["test"], "", "")
    return splits


_DOWNLOAD = "from https://monuseg.grand-challenge.org/Data/ (Google Drive links)"

SPEC = register(
    MessSpec(
        name="monuseg",
        title="MoNuSeg",
        domain="Medical Sciences",
        homepage="https://monuseg.grand-challenge.org/",
        description="H&E-stained tissue images of several organs with nucleus outlines; a "
        "training source for CryoNuSeg.",
        classes=CLASSES,
        background_class=0,
        eval_split="train",
        mess_name=None,
        train_source_for=("cryonuseg",),
        resources=(
            Resource(
                key="train",
                names=("MoNuSeg 2018 Training Data.zip", "MoNuSeg 2018 Training Data"),
                markers=("Tissue Images", "Annotations"),
                splits=("train",),
                description=f'The training data, "MoNuSeg 2018 Training Data.zip", {_DOWNLOAD}.',
            ),
            Resource(
                key="test",
                names=("MoNuSegTestData.zip", "MoNuSegTestData"),
                markers=("*.xml",),
                description=f"The test data, MoNuSegTestData.zip, {_DOWNLOAD}.",
                splits=("test",),
            ),
        ),
        splits=_splits,
        notes="Not a MESS dataset: a training source for CryoNuSeg (mess_cryonuseg). Touching "
        "nuclei merge into one region of the binary label, as in CryoNuSeg's binary masks.",
    )
)
