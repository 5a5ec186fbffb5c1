"""One registry of datasets: ``"kind:name"`` -> a random-access source and its :class:`DatasetInfo`.

Three kinds, one loader (:func:`load_dataset`), used by training, evaluation and comparisons:

``synthetic:<domain>``  a procedurally generated domain (:data:`mopeft_jax.data.synthetic.DOMAINS`:
                        ``source``, ``color_shift``, ``texture_shift``, ``noise_shift``,
                        ``shape_shift``), generated on demand;
``mess:<name>``         a MESS dataset prepared with :func:`mopeft_jax.data.mess.build`
                        (:data:`mopeft_jax.data.mess.REGISTRY`: ``bdd100k``, ``paxray_lungs``, ...);
``folder:<name>``       your own images and label PNGs, prepared with
                        :func:`mopeft_jax.data.folder.build_folder`.

Every source yields ``{"image": (H, W, 3) uint8, "label": (H, W) uint8, ...}`` with class indices
``0 .. K-1`` and :data:`IGNORE_LABEL` (255) in the labels.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Optional, Tuple, Union

from mopeft_jax.segments import IGNORE_LABEL

__all__ = [
    "IGNORE_LABEL",
    "KINDS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "default_classes_of_interest",
    "load_dataset",
]

KINDS = ("synthetic", "mess", "folder")

PathLike = Union[str, os.PathLike]


class DatasetError(ValueError):
    """A dataset name that names nothing (unknown kind, domain or MESS dataset)."""


def default_classes_of_interest(num_classes: int, background_class: Optional[int]):
    """MESS's usual classes of interest: every class but the background (all without one)."""
    return tuple(k for k in range(num_classes) if k != background_class)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training and evaluation need to know about a dataset.

    Attributes:
      name: the dataset's name within its kind (``"color_shift"``, ``"bdd100k"``, ``"my_data"``).
      domain: the group it is averaged in (a MESS domain, ``"Synthetic"``, ``"Folder"``).
      class_names: label value ``k`` is ``class_names[k]``.
      background_class: the class that takes the pixels no prompted class claims, or None.
      ignore_label: label value of ignored pixels.
      eval_split: the split evaluated by default.
      description: one or two sentences on what it is.
      classes_of_interest: the classes the class-of-interest metrics (CoI-mIoU) average over;
        () for the usual choice, every class but the background class
        (:func:`default_classes_of_interest`).
    """

    name: str
    domain: str
    class_names: Tuple[str, ...]
    background_class: Optional[int]
    ignore_label: int = IGNORE_LABEL
    eval_split: str = "val"
    description: str = ""
    classes_of_interest: Tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        coi = tuple(self.classes_of_interest) or default_classes_of_interest(
            len(self.class_names), self.background_class
        )
        object.__setattr__(self, "classes_of_interest", coi)

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (label values ``0 .. K-1``), background included."""
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split of a registered dataset.

    Attributes:
      spec: ``"kind:name"`` as given to :func:`load_dataset`.
      split: the split's name.
      source: random-access (``len``, ``source[i]``) of ``{"image", "label", ...}`` dicts.
      info: the dataset's metadata.
    """

    spec: str
    split: str
    source: Any
    info: DatasetInfo

    @property
    def name(self) -> str:
        """The name results tables show: a MESS dataset's own (``bdd100k``, as MESS reports it),
        ``kind:name`` for the others."""
        return self.info.name if self.spec.startswith("mess:") else self.spec


def parse(spec: str) -> Tuple[str, str]:
    """``"kind:name"`` -> ``(kind, name)``; raises :class:`DatasetError` for a malformed name."""
    kind, sep, name = str(spec).partition(":")
    if not sep or kind not in KINDS or not name:
        raise DatasetError(
            f"dataset {spec!r}: expected kind:name with kind one of {', '.join(KINDS)} "
            "(e.g. synthetic:color_shift, mess:bdd100k, folder:my_data)"
        )
    return kind, name


def load_dataset(
    spec: str,
    split: Optional[str] = None,
    *,
    data_dir: Optional[PathLike] = None,
    num_examples: int = 256,
    image_size: int = 128,
    seed: int = 0,
) -> Dataset:
    """The split ``split`` of dataset ``spec`` (``"kind:name"``).

    Args:
      spec: ``synthetic:<domain>``, ``mess:<name>`` or ``folder:<name>``.
      split: the split; None for the dataset's evaluation split (``info.eval_split``).
      data_dir: where prepared tfds datasets live (MESS and folder; tfds' default if None).
        ``~`` and environment variables are expanded.
      num_examples, image_size, seed: synthetic datasets only: their length, image side and
        seed (the same seed gives the same images).

    Raises:
      DatasetError: an unknown kind, domain or dataset name.
      FileNotFoundError: a MESS or folder dataset that is not prepared in ``data_dir``, with the
        command that prepares it.
    """
    kind, name = parse(spec)
    if data_dir is not None:
        data_dir = pathlib.Path(os.path.expandvars(os.fspath(data_dir))).expanduser()
    if kind == "synthetic":
        source, info = _synthetic(name, split, num_examples, image_size, seed)
    elif kind == "mess":
        source, info = _mess(name, split, data_dir)
    else:
        source, info = _folder(name, split, data_dir)
    return Dataset(f"{kind}:{name}", split or info.eval_split, source, info)


def _synthetic(name, split, num_examples, image_size, seed):
    from mopeft_jax.data import synthetic  # pylint: disable=g-import-not-at-top

    if name not in synthetic.DOMAINS:
        raise DatasetError(
            f"unknown synthetic domain {name!r}; known: {', '.join(sorted(synthetic.DOMAINS))}"
        )
    info = synthetic.DOMAINS[name]
    source = synthetic.SyntheticSegmentation(
        name, split or info.eval_split, num_examples, image_size, seed=seed
    )
    return source, info


def _check_prepared(kind: str, name: str, data_dir: Optional[pathlib.Path], prepare: str):
    """tfds would create a mistyped data_dir and try to build the dataset in it: refuse early."""
    if data_dir is not None and not data_dir.is_dir():
        raise FileNotFoundError(
            f"{kind}:{name}: the data directory {data_dir} does not exist; prepare the dataset "
            f"first with {prepare}"
        )


def _mess(name, split, data_dir):
    # Imported here: tensorflow_datasets is slow to import and synthetic runs do not need it.
    from mopeft_jax.data import mess  # pylint: disable=g-import-not-at-top

    try:
        spec = mess.get_spec(name)
    except KeyError:
        raise DatasetError(
            f"unknown MESS dataset {name!r}; known: {', '.join(sorted(mess.REGISTRY))}"
        ) from None
    prepare = f"mopeft_jax.data.mess.build({spec.name!r}, manual_dir=..., data_dir=...)"
    _check_prepared("mess", spec.name, data_dir, prepare)
    info = spec.info
    return mess.data_source(spec.name, split or info.eval_split, data_dir), info


def _folder(name, split, data_dir):
    from mopeft_jax.data import folder  # pylint: disable=g-import-not-at-top

    prepare = f"mopeft_jax.data.folder.build_folder(<your folder>, name={name!r}, data_dir=...)"
    _check_prepared("folder", name, data_dir, prepare)
    info = folder.dataset_info(name, data_dir)
    return folder.data_source(name, split or info.eval_split, data_dir), info
