"""tensorflow-datasets builders for the MESS-20 datasets, and training sources for two of them.

Each dataset is a :class:`~mopeft_jax.data.mess.spec.MessSpec` in its own module; importing this
package registers one tfds builder per spec (``mess_<name>``). Prepare a dataset from the files
you downloaded into a folder (the *manual directory*), then read it with numpy only::

    from mopeft_jax.data import mess

    mess.build("bdd100k", manual_dir="~/downloads/bdd100k", data_dir="~/tensorflow_datasets")
    source = mess.data_source("bdd100k", "train", data_dir="~/tensorflow_datasets")
    example = source[0]  # {"image": uint8 (H, W, 3), "label": uint8 (H, W), "file_name": bytes}
    spec = mess.get_spec("bdd100k")  # classes, background_class, eval_split, domain, ...

The same files can be built with plain tfds (``tfds.builder("mess_bdd100k")`` after importing
this package, ``download_and_prepare(file_format="array_record", download_config=
tfds.download.DownloadConfig(manual_dir=...))``). A missing or incomplete manual directory raises
one :class:`ManualDataError` that lists the expected files and where to get them. Where a split
has a download of its own (iSAID, SUIM, FloodNet, DRIVE, MoNuSeg), the splits whose files are
present are built, so the evaluated split's download is enough for an evaluation; reading a split
left out raises :class:`ManualDataError` naming its files, and ``build`` adds it once they are
there.

What is built is what MESS evaluates: the images and labels that MESS's own preparation scripts
(the ``mess-benchmark`` package) write, checked item by item against them in the tests; each
spec's ``notes`` say where MESS's scripts are followed beyond the obvious (re-saved JPEGs, colours
outside a palette) and which of their bugs are not copied.

Modules: :mod:`~mopeft_jax.data.mess.spec` (``MessSpec``, ``Resource``, the registry),
:mod:`~mopeft_jax.data.mess.archives` (reading downloads: folders, zip, tar),
:mod:`~mopeft_jax.data.mess.manual_dir` (finding the files, the errors),
:mod:`~mopeft_jax.data.mess.labels` (label mappings, image/label pairing),
:mod:`~mopeft_jax.data.mess.builder` (the tfds builder, ``build``, ``data_source``), and one
module per dataset. The example format, shared with the folder builder, is
:mod:`mopeft_jax.data.records`.

:data:`MESS20` lists the datasets by their MESS names; PAXRay-4 is four binary builders. Three more
builders are training sources, not MESS datasets: CHASE DB1 and CryoNuSeg have no train split, so
their users train on DRIVE and STARE (``mess_drive``, ``mess_stare``) and on MoNuSeg
(``mess_monuseg``). Their specs have ``mess_name`` None and name the MESS datasets they serve in
``train_source_for``.
"""

import types

# Importing the dataset modules registers their builders.
from mopeft_jax.data.mess import (  # noqa: F401
    atlantis,
    bdd100k,
    chase_db1,
    corrosion_cs,
    cryonuseg,
    cub_200,
    cwfid,
    dark_zurich,
    deepcrack,
    drive,
    floodnet,
    foodseg103,
    isaid,
    isprs_potsdam,
    kvasir_instrument,
    mhp_v1,
    monuseg,
    paxray,
    pst900,
    stare,
    suim,
    uavid,
    zerowaste,
)
from mopeft_jax.data.mess.builder import build, builder_class, data_source
from mopeft_jax.data.mess.manual_dir import check_manual_dir
from mopeft_jax.data.mess.spec import DEV_SPLIT, MESS_DOMAINS, MessSpec, get_spec
from mopeft_jax.data.mess.spec import REGISTRY as _REGISTRY
from mopeft_jax.data.records import ManualDataError, SizeMismatchError
from mopeft_jax.segments import IGNORE_LABEL

REGISTRY = types.MappingProxyType(_REGISTRY)
"""Read-only ``name -> MessSpec`` of every builder here (26: the 23 of :data:`MESS20`, where PAXRay-4
counts four, and the training sources DRIVE, STARE and MoNuSeg)."""

MESS20 = types.MappingProxyType(
    {
        "BDD100K": ("bdd100k",),
        "Dark Zurich": ("dark_zurich",),
        "MHP v1": ("mhp_v1",),
        "FoodSeg103": ("foodseg103",),
        "ATLANTIS": ("atlantis",),
        "iSAID": ("isaid",),
        "ISPRS Potsdam": ("isprs_potsdam",),
        "FloodNet": ("floodnet",),
        "UAVid": ("uavid",),
        "Kvasir-Instrument": ("kvasir_instrument",),
        "CHASE DB1": ("chase_db1",),
        "CryoNuSeg": ("cryonuseg",),
        "PAXRay-4": ("paxray_lungs", "paxray_mediastinum", "paxray_bones", "paxray_diaphragm"),
        "Corrosion CS": ("corrosion_cs",),
        "DeepCrack": ("deepcrack",),
        "PST900": ("pst900",),
        "ZeroWaste-f": ("zerowaste",),
        "SUIM": ("suim",),
        "CUB-200": ("cub_200",),
        "CWFID": ("cwfid",),
    }
)
"""MESS display name -> registry names, in MESS's order (the 22 MESS datasets less DRAM and
WorldFloods)."""

__all__ = [
    "DEV_SPLIT",
    "MESS_DOMAINS",
    "IGNORE_LABEL",
    "MESS20",
    "ManualDataError",
    "MessSpec",
    "REGISTRY",
    "SizeMismatchError",
    "build",
    "builder_class",
    "check_manual_dir",
    "data_source",
    "get_spec",
]
