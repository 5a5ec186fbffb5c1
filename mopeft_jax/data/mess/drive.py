"""DRIVE (training source for MESS's CHASE DB1): retinal fundus images, blood vessels vs. others.

DRIVE (Digital Retinal Images for Vessel Extraction) has 40 colour fundus photographs (565 x 584
px) of a Dutch diabetic-retinopathy screening programme, each with a vessel annotation. MESS does
not evaluate it; it is here because CHASE DB1, which MESS tests on, has no train split: train on
DRIVE (and STARE, ``mess_stare``) and evaluate on ``mess_chase_db1``.

Splits: ``train``, the 20 training images (``training/images/NN_training.tif``) with their manual
annotation (``training/1st_manual/NN_manual1.gif``); ``test``, the 20 test images with the first
observer's annotation, offered only where the download has those annotations (DRIVE's challenge
site withholds them). A pixel is a vessel where the annotation is not black, as in CHASE DB1.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import nonblack, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = ("others", "blood vessels")  # as chase_db1


def _manual_name(stem):
    # "21_training" and "01_test" are annotated in "21_manual1.gif" and "01_manual1.gif".
    return f"{stem.split('_')[0]}_manual1.gif"


def _pairs(src, folder):
    return stem_pairs(
        src, f"{folder}/images", src, f"{folder}/1st_manual", nonblack, label_name=_manual_name
    )


def _splits(sources):
    splits = {}
    if "train" in sources:
        splits["train"] = _pairs(sources["train"], "training")
    test = _pairs(sources["test"], "test") if "test" in sources else []
    if test:  # test images without annotations give no split rather than an error
        splits["test"] = test
    return splits


SPEC = register(
    MessSpec(
        name="drive",
        title="DRIVE",
        domain="Medical Sciences",
        homepage="https://drive.grand-challenge.org/",
        description="Retinal fundus images of adults (diabetic-retinopathy screening) with "
        "blood-vessel annotations; a training source for CHASE DB1.",
        classes=CLASSES,
        background_class=0,
        eval_split="train",
        mess_name=None,
        train_source_for=("chase_db1",),
        resources=(
            Resource(
                key="train",
                names=("DRIVE.zip", "DRIVE", "training.zip", "training"),
                markers=("training/images", "training/1st_manual"),
                splits=("train",),
                description="DRIVE.zip (training/ and test/), or the training set on its own "
                "(training.zip), from https://drive.grand-challenge.org/Download/ (registration) "
                "or a mirror of it.",
            ),
            Resource(
                key="test",
                names=("DRIVE.zip", "DRIVE", "test.zip", "test"),
                markers=("test/images",),
                description="The test set: DRIVE.zip again, or test.zip; a test split is made "
                "where it holds the annotations test/1st_manual/NN_manual1.gif.",
                splits=("test",),
            ),
        ),
        splits=_splits,
        notes="Not a MESS dataset: a training source for CHASE DB1 (mess_chase_db1). The "
        "field-of-view masks (mask/) are not used: pixels outside the field of view are "
        '"others", as in CHASE DB1. The test split needs the test annotations, which not every '
        "download has.",
    )
)
