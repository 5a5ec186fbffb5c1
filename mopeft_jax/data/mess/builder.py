"""The tfds builder of every MESS spec, and the user's entry points: build, read, check.

:func:`register` turns a :class:`~mopeft_jax.data.mess.spec.MessSpec` into a
``tensorflow_datasets`` builder (``GeneratorBasedBuilder``) named ``mess_<name>``. It writes the
features of :func:`mopeft_jax.data.records.features` as array_record, read back with
``tfds.data_source`` (numpy, no TensorFlow).

A build makes every split whose files are in the manual directory (see
:mod:`mopeft_jax.data.mess.manual_dir`); the splits it leaves out are recorded in the prepared
dataset's metadata (``missing_splits``), so that asking for one later, through
:func:`data_source` or plain ``tfds.data_source``, raises a
:class:`~mopeft_jax.data.records.ManualDataError` naming the files it needs rather than tfds'
"Unknown split". :func:`build` prepares the dataset anew once those files are there.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import types
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from mopeft_jax.data.mess.manual_dir import missing_message, missing_split_message, resolve
from mopeft_jax.data.mess.spec import DEV_SPLIT, REGISTRY, MessSpec, get_spec
from mopeft_jax.data.records import (
    ManualDataError,
    Pair,
    SizeMismatchError,
    encode_example,
    features,
)

__all__ = ["MessBuilder", "build", "builder_class", "carve_dev", "data_source", "register"]

log = logging.getLogger(__name__)

_BUILDERS: dict[str, type] = {}


def carve_dev(pairs: Sequence[Pair], fraction: float, seed: str) -> tuple[list[Pair], list[Pair]]:
    """Splits ``pairs`` into ``(train, dev)`` by group, deterministically.

    Groups are ordered by a hash of ``seed`` and the group name, and the first
    ``max(1, round(fraction * n_groups))`` of them (none if there is only one group) form dev, so
    the split does not depend on the order of the files nor on the machine.
    """
    groups = sorted({p.group or p.key for p in pairs})
    n_dev = 0 if len(groups) < 2 else max(1, round(fraction * len(groups)))
    ranked = sorted(
        groups, key=lambda g: hashlib.blake2b(f"{seed}/{g}".encode(), digest_size=8).digest()
    )
    dev_groups = set(ranked[:n_dev])
    train = [p for p in pairs if (p.group or p.key) not in dev_groups]
    dev = [p for p in pairs if (p.group or p.key) in dev_groups]
    return train, dev


def _manual_dir_of(dl_manager) -> Optional[Path]:
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError:
        # tfds refuses an empty/missing manual dir before we can list what belongs there.
        raw = getattr(dl_manager, "_manual_dir", None)
        return None if raw is None else Path(raw)


def _workdir(download_dir: Union[str, os.PathLike], spec: MessSpec) -> Path:
    """Where the archives of ``spec`` that cannot be read in place are extracted."""
    return Path(download_dir) / "mess_extracted" / spec.name


def _split_names(split: Any) -> list[str]:
    """The split names in a tfds split argument (``"train[:10%]+test"``, a list or a dict)."""
    if isinstance(split, Mapping):
        parts = list(split.values())
    elif isinstance(split, (list, tuple)):
        parts = list(split)
    else:
        parts = [split]
    names = []
    for part in parts:
        if isinstance(part, str):
            names += [p.split("[")[0].strip() for p in part.split("+")]
    return names


class MessBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of every MESS builder; concrete ones are made by :func:`register`."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: MESS label mappings, array_record.",
        "1.1.0": "Images and labels as MESS's preparation scripts write them (re-saved JPEGs, "
        "colours outside the palettes); builds of the splits whose files are present.",
    }
    SPEC: MessSpec

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default probes `importlib_resources` (a backport it does not install) for any
        # builder defined in a package; the defining file is all it needs.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.SPEC
        description = spec.description
        if spec.notes:
            description += "\n\n" + spec.notes
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=features(),
            supervised_keys=("image", "label"),
            homepage=spec.homepage,
            metadata=tfds.core.MetadataDict(spec.metadata()),
            disable_shuffling=True,  # examples in file order: index i is the same file everywhere
        )

    def _split_generators(self, dl_manager):
        spec = self.SPEC
        manual_dir = _manual_dir_of(dl_manager)
        sources, missing = resolve(spec, manual_dir, _workdir(dl_manager.download_dir, spec))
        splits = {k: list(v) for k, v in spec.splits(sources).items()}
        if spec.dev_fraction and "train" in splits:
            splits["train"], splits[DEV_SPLIT] = carve_dev(
                splits["train"], spec.dev_fraction, spec.name
            )
        empty = [s for s, pairs in splits.items() if not pairs]
        if empty or not splits:
            found = "found, but no image/label pairs"
            found += f" for split(s) {', '.join(empty)}" if empty else ""
            lacking = {key: state for states in missing.values() for key, state in states.items()}
            problems = {**lacking, **dict.fromkeys(sources, found)}
            raise ManualDataError(missing_message(spec, manual_dir, problems))
        self.info.metadata["missing_splits"] = missing
        return {split: self._generate_examples(pairs) for split, pairs in splits.items()}

    def _generate_examples(self, pairs: Sequence[Pair]):
        spec = self.SPEC
        skipped = 0
        for pair in pairs:
            try:
                # Read all tiles first, so that a failing pair adds no example at all.
                examples = list(
                    encode_example(
                        pair, spec.num_classes, spec.tile_size, resave_jpeg=spec.resave_jpeg
                    )
                )
            except SizeMismatchError as err:
                # A few third-party training pairs are corrupt; one must not sink a whole build.
                # Wrong label *values* still raise: they mean a wrong mapping.
                log.warning("%s: skipped: %s", spec.name, err)
                skipped += 1
                continue
            yield from examples
        if skipped:
            log.warning("%s: skipped %d image/label pairs of different sizes", spec.name, skipped)

    def _check_split(self, split) -> None:
        """Raises ManualDataError for a split that was left out of the build for lack of files."""
        missing = self.info.metadata.get("missing_splits") or {}
        for name in _split_names(split):
            if name in missing and name not in self.info.splits:
                raise ManualDataError(missing_split_message(self.SPEC, name, missing[name]))

    def as_data_source(self, split=None, **kwargs):
        """``tfds``' ``as_data_source``; a split left out of the build raises ManualDataError."""
        self._check_split(split)
        return super().as_data_source(split, **kwargs)

    def as_dataset(self, split=None, **kwargs):
        """``tfds``' ``as_dataset``; a split left out of the build raises ManualDataError."""
        self._check_split(split)
        return super().as_dataset(split, **kwargs)


def register(spec: MessSpec) -> MessSpec:
    """Makes the tfds builder ``mess_<name>`` for ``spec`` and adds the spec to the registry."""
    if spec.name in REGISTRY:
        raise ValueError(f"MESS dataset {spec.name!r} registered twice")
    class_name = "Mess" + "".join(part.capitalize() for part in spec.name.split("_"))
    attrs = {
        "name": spec.tfds_name,
        "SPEC": spec,
        "MANUAL_DOWNLOAD_INSTRUCTIONS": spec.manual_instructions(),
        "__doc__": f"{spec.title} ({_role(spec)}, {spec.domain}). {spec.homepage}",
        "__module__": __name__,
    }
    _BUILDERS[spec.name] = types.new_class(
        class_name, (MessBuilder,), exec_body=lambda ns: ns.update(attrs)
    )
    REGISTRY[spec.name] = spec
    return spec


def _role(spec: MessSpec) -> str:
    if spec.mess_name is not None:
        return "MESS"
    return "training source for MESS " + ", ".join(spec.train_source_for)


def builder_class(name: str) -> type:
    """The tfds builder class of a registered MESS dataset."""
    return _BUILDERS[get_spec(name).name]


def _added_splits(builder: MessBuilder, manual_dir: Path, download_dir: Path) -> set[str]:
    """The splits a prepared dataset lacks whose files ``manual_dir`` now holds."""
    if not builder.is_prepared():
        return set()
    lacking = builder.info.metadata.get("missing_splits") or {}
    if not lacking:
        return set()
    try:
        _, missing = resolve(builder.SPEC, manual_dir, _workdir(download_dir, builder.SPEC))
    except ManualDataError:
        return set()  # nothing buildable there: keep what is prepared
    return set(lacking) - set(missing)


def build(
    name: str,
    manual_dir: Union[str, os.PathLike],
    data_dir: Optional[Union[str, os.PathLike]] = None,
    download_dir: Optional[Union[str, os.PathLike]] = None,
) -> tfds.core.DatasetBuilder:
    """Prepares MESS dataset ``name`` from the files in ``manual_dir`` as array_record.

    Every split whose files are present is built; a split whose files are not (e.g. ``train``
    of iSAID, when only the evaluated ``val`` was downloaded) is left out, and reading it raises
    :class:`~mopeft_jax.data.records.ManualDataError` naming its files. A dataset already prepared
    is reused, unless it lacks splits whose files ``manual_dir`` now holds: then it is prepared
    anew.

    Args:
      name: registry key, e.g. ``"bdd100k"`` (see :data:`~mopeft_jax.data.mess.spec.REGISTRY`).
      manual_dir: the folder holding the downloaded files (see
        :func:`~mopeft_jax.data.mess.manual_dir.check_manual_dir`).
      data_dir: where tfds datasets live (tfds' default, ``~/tensorflow_datasets``, if None).
      download_dir: where archives that cannot be read in place are extracted (tfds' default,
        ``<data_dir>/downloads``, if None); it can be deleted afterwards.

    Returns:
      The prepared builder (``builder.info`` has the splits; ``builder.info.metadata`` the
      classes, background class, ignore label, domain and the splits left out).
    """
    builder = builder_class(name)(data_dir=data_dir, file_format="array_record")
    manual_dir = Path(manual_dir).expanduser()
    download_dir = Path(download_dir or Path(builder.data_dir_root) / "downloads")
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    added = _added_splits(builder, manual_dir, download_dir)
    if added:
        log.info("%s: preparing again to add split(s) %s", name, ", ".join(sorted(added)))
        mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    builder.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), download_mode=mode
        ),
    )
    return builder


def data_source(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]] = None):
    """A random-access numpy source of a prepared split (``tfds.data_source``).

    Raises:
      ManualDataError: ``split`` was left out of the build for lack of its files.
    """
    return tfds.data_source(get_spec(name).tfds_name, split=split, data_dir=data_dir)
