"""What a MESS builder knows about its dataset: one declarative :class:`MessSpec` per dataset.

A spec names the files a user downloads into the *manual directory* (:class:`Resource`), a
function that finds the image/label pairs of every split inside them, the class names, the
background class, the classes of interest, the domain and MESS's evaluation split. Registering a
spec (:func:`mopeft_jax.data.mess.builder.register`) makes its tfds builder and adds it to
:data:`REGISTRY`.

Besides the MESS datasets, a few *training sources* are registered the same way: datasets that
MESS does not evaluate but that give a train split to the MESS datasets without one (DRIVE and
STARE for CHASE DB1, MoNuSeg for CryoNuSeg); their ``mess_name`` is None.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from mopeft_jax.data.mess.archives import Source
from mopeft_jax.data.records import Pair
from mopeft_jax.data.registry import DatasetInfo, default_classes_of_interest
from mopeft_jax.segments import IGNORE_LABEL

__all__ = ["DEV_SPLIT", "MESS_DOMAINS", "REGISTRY", "MessSpec", "Resource", "get_spec"]

DEV_SPLIT = "dev"
"""Name of the split carved from ``train`` for datasets that MESS evaluates on ``val``."""

MESS_DOMAINS = (
    "General",
    "Earth Monitoring",
    "Medical Sciences",
    "Engineering",
    "Agriculture and Biology",
)
"""The five MESS domains, in MESS's order."""


@dataclasses.dataclass(frozen=True)
class Resource:
    """One thing the user puts into the manual directory.

    Attributes:
      key: how the spec's ``splits`` function names it.
      names: accepted names in the manual directory, as ``glob`` patterns relative to it, in order
        of preference; the first pattern that matches anything wins, and all its matches together
        form the resource (an archive in several parts).
      markers: paths relative to the dataset's root inside the resource (``fnmatch`` patterns
        allowed, ``"a|b"`` for either). The first one that matches locates the root; all must
        exist.
      description: what it is and where to get it (shown when it is missing).
      password: of an encrypted zip, where the dataset's page publishes one.
      splits: the splits made from it alone (e.g. ``("test",)`` for test data published
        separately), or ``()``: every split needs it. Without it, or with it incomplete, those
        splits are left out of the build (``dev`` with ``train``) and the others are built; asking
        for one of them later raises :class:`~mopeft_jax.data.records.ManualDataError` naming it.
    """

    key: str
    names: tuple[str, ...]
    markers: tuple[str, ...]
    description: str
    password: Optional[bytes] = None
    splits: tuple[str, ...] = ()

    @property
    def shown_as(self) -> str:
        """How instructions and errors name it: its names, and the splits it alone is for."""
        names = " or ".join(self.names)
        return f"{names} ({' and '.join(self.splits)} split only)" if self.splits else names


@dataclasses.dataclass(frozen=True)
class MessSpec:
    """Everything a MESS builder needs to know about its dataset.

    Attributes:
      name: registry key (``"bdd100k"``); the tfds builder is ``"mess_" + name``.
      title: display name as MESS prints it (``"BDD100K"``).
      domain: one of :data:`MESS_DOMAINS`.
      homepage: the dataset's page.
      description: a few sentences: what it is, which image modality, how labels were mapped.
      classes: class names; label value ``k`` is ``classes[k]``.
      background_class: class that takes pixels no prompt claims (MESS metadata), or ``None``
        where the dataset has none (MESS registers 255 there).
      classes_of_interest: the classes MESS's CoI-mIoU averages over (its registration's
        ``classes_of_interest``); ``()`` for MESS's usual choice, every class but the background
        (every class where there is none). FloodNet is the exception: only its flooded classes.
      eval_split: the split MESS evaluates (``"test"`` or ``"val"``); for a training source, which
        MESS does not evaluate, ``"train"``, the one split every download of it has.
      mess_name: MESS's registered (detectron2) dataset name, e.g. ``"bdd100k_sem_seg_val"``;
        ``None`` for a training source (a dataset that is not in MESS, see ``train_source_for``).
      resources: what the manual directory must hold.
      splits: ``splits(sources) -> {split: [Pair, ...]}``, given one :class:`Source` per resource
        that is present. A resource made for some splits only (:attr:`Resource.splits`) may be
        absent: leave its splits out then.
      dev_fraction: if > 0, a ``dev`` split of about this fraction of ``train``'s groups is carved
        from ``train`` (deterministically).
      tile_size: if set, images and labels are cut into non-overlapping tiles of this size, the
        last row/column padded with 0 (image) and 255 (label), as MESS does for large images.
      resave_jpeg: store the images (tiles) as PIL's default JPEG of their RGB conversion, since
        MESS's preparation script re-saves them so and MESS evaluates those files; otherwise the
        downloaded bytes are kept (PNG where they are not RGB JPEG/PNG, or are tiled).
      download: how to get the files (shown with the missing-file error).
      notes: deviations from MESS or caveats, for the builder's description.
      train_source_for: registry names of the MESS datasets whose users train on this one,
        where it is not itself a MESS dataset (DRIVE for CHASE DB1, which has no train split).
    """

    name: str
    title: str
    domain: str
    homepage: str
    description: str
    classes: tuple[str, ...]
    background_class: Optional[int]
    eval_split: str
    mess_name: Optional[str]
    resources: tuple[Resource, ...]
    splits: Callable[[Mapping[str, Source]], Mapping[str, Sequence[Pair]]]
    dev_fraction: float = 0.0
    tile_size: Optional[int] = None
    resave_jpeg: bool = False
    classes_of_interest: tuple[int, ...] = ()
    download: str = ""
    notes: str = ""
    train_source_for: tuple[str, ...] = ()

    def __post_init__(self):
        if self.domain not in MESS_DOMAINS:
            raise ValueError(f"{self.name}: unknown domain {self.domain!r}")
        if self.background_class is not None and not 0 <= self.background_class < len(self.classes):
            raise ValueError(f"{self.name}: background_class out of range")
        if len(self.classes) > IGNORE_LABEL:
            raise ValueError(f"{self.name}: too many classes for uint8 labels")
        if (self.mess_name is None) != bool(self.train_source_for):
            raise ValueError(
                f"{self.name}: give either mess_name (a MESS dataset) or train_source_for "
                "(a training source of MESS datasets)"
            )
        if not self.classes_of_interest:
            coi = default_classes_of_interest(len(self.classes), self.background_class)
            object.__setattr__(self, "classes_of_interest", coi)
        if not all(0 <= k < len(self.classes) for k in self.classes_of_interest):
            raise ValueError(f"{self.name}: classes_of_interest out of range")

    @property
    def tfds_name(self) -> str:
        """The tfds builder's name, ``mess_<name>``."""
        return f"mess_{self.name}"

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (label values ``0 .. K-1``)."""
        return len(self.classes)

    @property
    def info(self) -> DatasetInfo:
        """The dataset's metadata as training and evaluation read it."""
        return DatasetInfo(
            self.name,
            self.domain,
            self.classes,
            self.background_class,
            IGNORE_LABEL,
            self.eval_split,
            self.description,
            self.classes_of_interest,
        )

    def metadata(self) -> dict[str, Any]:
        """The dataset-level metadata stored with the prepared files (JSON-serialisable)."""
        return {
            "name": self.name,
            "title": self.title,
            "domain": self.domain,
            "classes": list(self.classes),
            "background_class": self.background_class,
            "classes_of_interest": list(self.classes_of_interest),
            "ignore_label": IGNORE_LABEL,
            "eval_split": self.eval_split,
            "mess_name": self.mess_name,
            "train_source_for": list(self.train_source_for),
        }

    def manual_instructions(self) -> str:
        """What to put into the manual directory (tfds ``MANUAL_DOWNLOAD_INSTRUCTIONS``)."""
        lines = [f"{self.title} ({self.homepage}). Put into the manual directory:"]
        for res in self.resources:
            lines.append(f"  - {res.shown_as}: {res.description}")
        if self.download:
            lines.append(self.download)
        return "\n".join(lines)


REGISTRY: dict[str, MessSpec] = {}
"""All registered MESS specs by name (a read-only view is exported by the package)."""


def get_spec(name: str) -> MessSpec:
    """The spec registered as ``name`` (``"bdd100k"``; ``"mess_bdd100k"`` works too)."""
    key = name[len("mess_") :] if name.startswith("mess_") and name not in REGISTRY else name
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown MESS dataset {name!r}; known: {sorted(REGISTRY)}") from None
