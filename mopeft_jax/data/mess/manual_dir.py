"""The manual directory: finding each resource of a spec in it, and saying what is missing.

A user downloads a dataset's files into one folder, the *manual directory*, and
:func:`resolve` finds every :class:`~mopeft_jax.data.mess.spec.Resource` of the spec in it.
What is missing decides what can be built:

* a resource that every split needs (``Resource.splits == ()``) is required: without it one
  :class:`~mopeft_jax.data.records.ManualDataError` lists every expected file and its state;
* a resource made for some splits only (MESS's evaluation needs only the evaluated split's
  download for iSAID, SUIM and FloodNet) leaves those splits out; the others are built, and
  :func:`missing_split_message` says what a left-out split would need.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping, Optional, Union

from mopeft_jax.data.mess.archives import Source, locate, open_tree
from mopeft_jax.data.mess.spec import DEV_SPLIT, MessSpec, Resource, get_spec
from mopeft_jax.data.records import ManualDataError

__all__ = ["check_manual_dir", "missing_message", "missing_split_message", "resolve"]

log = logging.getLogger(__name__)


def _matches(res: Resource, manual_dir: Path) -> list[Path]:
    """The files of the first of the resource's names that matches anything."""
    for pattern in res.names:
        matches = sorted(p for p in manual_dir.glob(pattern) if not p.name.startswith("."))
        if matches:
            return matches
    return []


def _open(res: Resource, matches: list[Path], manual_dir: Path, workdir: Path) -> Source:
    trees = [
        open_tree(m, str(m.relative_to(manual_dir)), workdir / res.key, res.password)
        for m in matches
    ]
    label = ", ".join(str(m.relative_to(manual_dir)) for m in matches)
    return locate(trees, res.markers, label, workdir / res.key)


def resolve(
    spec: MessSpec, manual_dir: Optional[Path], workdir: Path
) -> tuple[dict[str, Source], dict[str, dict[str, str]]]:
    """Finds the spec's resources in ``manual_dir``.

    Args:
      spec: the dataset.
      manual_dir: the manual directory (None: not given).
      workdir: where archives that cannot be read in place are extracted.

    Returns:
      ``(sources, missing_splits)``: a :class:`Source` per resource found complete, and for every
      split that cannot be built, ``{resource key: state}`` of the resources it lacks (``dev``
      lacks what ``train`` lacks).

    Raises:
      ManualDataError: listing every resource and its state, when nothing can be built: a
        resource that every split needs is missing or unreadable, or every split lacks one.
    """
    problems: dict[str, str] = {}
    sources: dict[str, Source] = {}
    if manual_dir is not None:
        manual_dir = Path(manual_dir).expanduser()
    for res in spec.resources:
        matches = _matches(res, manual_dir) if manual_dir and manual_dir.is_dir() else []
        if not matches:
            problems[res.key] = "missing"
            continue
        try:
            sources[res.key] = _open(res, matches, manual_dir, workdir)
        except (ManualDataError, zipfile.BadZipFile, tarfile.TarError) as err:
            problems[res.key] = f"found, but incomplete or unreadable ({err})"
    missing: dict[str, dict[str, str]] = {}
    for res in spec.resources:
        for split in res.splits if res.key in problems else ():
            missing.setdefault(split, {})[res.key] = problems[res.key]
    required = [res for res in spec.resources if res.key in problems and not res.splits]
    named = {split for res in spec.resources for split in res.splits}
    split_only = all(res.splits for res in spec.resources)
    if required or (split_only and named <= set(missing)):
        raise ManualDataError(missing_message(spec, manual_dir, problems))
    if spec.dev_fraction and "train" in missing:
        missing[DEV_SPLIT] = missing["train"]
    for split, lacking in missing.items():
        log.warning(
            "%s: split %s left out: %s",
            spec.name,
            split,
            "; ".join(f"{key} {state}" for key, state in lacking.items()),
        )
    return sources, missing


def _resource_lines(spec: MessSpec, states: Mapping[str, str]) -> list[str]:
    lines = []
    for res in spec.resources:
        if res.key in states:
            lines.append(f"  - {res.shown_as}  [{states[res.key]}]")
            lines.append(f"      {res.description}")
    lines.append(f"Dataset page: {spec.homepage}")
    if spec.download:
        lines.append(spec.download)
    return lines


def missing_message(spec: MessSpec, manual_dir: Optional[Path], problems: Mapping[str, str]) -> str:
    """The error of a manual directory from which nothing can be built: every file and its state."""
    where = manual_dir if manual_dir is not None else "(no manual directory given)"
    states = {res.key: problems.get(res.key, "ok") for res in spec.resources}
    lines = [
        f"MESS dataset {spec.name!r} ({spec.title}): the manual directory {where} is missing "
        "or incomplete. It must hold:",
        *_resource_lines(spec, states),
        "Pass the folder as tfds.download.DownloadConfig(manual_dir=...) "
        "(or mopeft_jax.data.mess.build(name, manual_dir=...)).",
    ]
    return "\n".join(lines)


def missing_split_message(spec: MessSpec, split: str, lacking: Mapping[str, str]) -> str:
    """The error of a split left out of a build: the files it lacked, and how to add it."""
    carved = " (carved from train)" if split == DEV_SPLIT else ""
    lines = [
        f"MESS dataset {spec.name!r} ({spec.title}): split {split!r}{carved} was not built, "
        "since the manual directory lacked its files when the dataset was prepared. It needs:",
        *_resource_lines(spec, lacking),
        f"Put them into the manual directory and run mopeft_jax.data.mess.build({spec.name!r}, "
        "manual_dir=..., data_dir=...) again: it prepares the dataset anew with every split "
        "whose files are present.",
    ]
    return "\n".join(lines)


def check_manual_dir(
    name: str, manual_dir: Union[str, os.PathLike], workdir=None
) -> dict[str, dict[str, str]]:
    """Checks what ``manual_dir`` holds for dataset ``name``.

    Tar archives are extracted into ``workdir`` (a temporary folder by default) to be checked.

    Returns:
      The splits that a build would leave out, each with ``{resource key: state}`` of the files
      it lacks; ``{}`` when every split can be built.

    Raises:
      ManualDataError: nothing can be built (see :func:`resolve`).
    """
    spec = get_spec(name)
    manual_dir = Path(manual_dir).expanduser()
    if workdir is not None:
        return resolve(spec, manual_dir, Path(workdir))[1]
    with tempfile.TemporaryDirectory() as tmp:
        return resolve(spec, manual_dir, Path(tmp))[1]
