"""A tfds builder for a user's own segmentation data: a folder of images and label PNGs.

Layout (splits are subfolders; either nesting works; docs/data.md has the details)::

    my_data/
      classes.txt              one class name per line; line k (from 0) is label value k
      train/images/a.jpg       any image PIL reads (jpg, png, tif, bmp, webp)
      train/labels/a.png       same stem; single-channel PNG of class indices, 255 = ignore
      val/images/...  val/labels/...

or ``my_data/images/<split>/...`` with ``my_data/labels/<split>/...``. A folder without split
subfolders (``my_data/images/*`` and ``my_data/labels/*``) is one ``train`` split. The prepared
dataset has the features of the MESS builders (``image``, ``label``, ``file_name``) and their
metadata (``classes``, ``background_class``, ``ignore_label``), is written as array_record and is
read with numpy only::

    from mopeft_jax.data import folder, load_dataset

    folder.build_folder("~/my_data", background_class="background", data_dir="~/tfds")
    dataset = load_dataset("folder:my_data", "train", data_dir="~/tfds")

Before writing anything, every label is read and checked (values, channels, size), and every
problem names its file. Binary masks saved as 0/255 (255 means "ignore" here) are refused unless
``binary_masks=True`` reads 255 as class 1; classes that never occur and splits without a
labelled pixel are warned about. The prepared dataset records a fingerprint of the folder: a
later ``build_folder`` rebuilds it when the files or the class list changed (``overwrite=True``
rebuilds in any case). With plain tfds the data is ``tfds.data_source("folder_segmentation/my_data",
...)``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from mopeft_jax.data.records import (
    ManualDataError,
    Pair,
    decode_image,
    encode_example,
    features,
)
from mopeft_jax.data.registry import DatasetInfo
from mopeft_jax.segments import IGNORE_LABEL

__all__ = [
    "DOMAIN",
    "FolderConfig",
    "FolderSegmentation",
    "build_folder",
    "data_source",
    "dataset_info",
    "scan_folder",
]

DOMAIN = "Folder"
"""The domain folder datasets are reported under."""

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_CLASSES_FILE = "classes.txt"

_LAYOUT = """\
Expected layout (splits as subfolders, either nesting):
  <root>/classes.txt            one class name per line; line k (from 0) is label value k
  <root>/<split>/images/<stem>.<jpg|png|...>
  <root>/<split>/labels/<stem>.png   class indices, 255 = ignore
or <root>/images/<split>/... and <root>/labels/<split>/..., or <root>/images + <root>/labels
for a single 'train' split."""


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
    """One user dataset: where it is and which class is the background.

    Attributes:
      root_dir: the dataset folder (see the module docstring for its layout).
      background_class: index or name of the background class, or None if there is none.
      binary_masks: labels are binary masks saved as 0/255: 255 is class 1, not "ignore".
      fingerprint: of the folder's files and class list when it was prepared.
    """

    root_dir: str = ""
    background_class: Optional[Union[int, str]] = None
    binary_masks: bool = False
    fingerprint: str = ""


def _default_name(root_dir: Union[str, os.PathLike]) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", Path(root_dir).expanduser().resolve().name.lower())
    return name.strip("_") or "dataset"


def _read_classes(root: Path) -> tuple[str, ...]:
    lines = (root / _CLASSES_FILE).read_text(encoding="utf-8-sig").splitlines()
    classes = tuple(line.strip() for line in lines if line.strip())
    if not classes:
        raise ManualDataError(f"{root / _CLASSES_FILE} lists no class\n{_LAYOUT}")
    if len(classes) >= IGNORE_LABEL:
        raise ValueError(f"{root / _CLASSES_FILE}: at most {IGNORE_LABEL - 1} classes")
    return classes


def _split_dirs(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (images dir, labels dir), for whichever of the layouts ``root`` uses."""
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / "images").is_dir() and (sub / "labels").is_dir():
            found[sub.name] = (sub / "images", sub / "labels")
    images, labels = root / "images", root / "labels"
    if images.is_dir() and labels.is_dir():
        for sub in sorted(p for p in images.iterdir() if p.is_dir()):
            if (labels / sub.name).is_dir():
                found.setdefault(sub.name, (sub, labels / sub.name))
        if not found and any(p.is_file() for p in images.iterdir()):
            found["train"] = (images, labels)
    return found


def scan_folder(root_dir: Union[str, os.PathLike]) -> dict[str, list[tuple[Path, Path]]]:
    """``split -> [(image, label), ...]`` of a dataset folder; raises if it is unusable.

    Images are paired with the label PNG of the same stem (in the same relative subfolder);
    images without a label are an error, since a silently dropped image is easy to miss.
    """
    root = Path(root_dir).expanduser()
    problems = []
    if not root.is_dir():
        raise ManualDataError(f"dataset folder {root} does not exist\n{_LAYOUT}")
    if not (root / _CLASSES_FILE).is_file():
        problems.append(f"{root / _CLASSES_FILE} is missing")
    splits = _split_dirs(root)
    if not splits:
        problems.append(f"no images/ + labels/ folders under {root}")
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for split, (image_dir, label_dir) in splits.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", split):
            problems.append(f"split folder {split!r}: use letters, digits and '_' only")
            continue
        found, unlabelled = [], []
        for image in sorted(image_dir.rglob("*")):
            if not image.is_file() or image.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            rel = image.relative_to(image_dir).with_suffix(".png")
            label = label_dir / rel
            (found if label.is_file() else unlabelled).append((image, label))
        if unlabelled:
            names = ", ".join(str(label) for _, label in unlabelled[:3])
            problems.append(f"{len(unlabelled)} images of split {split!r} lack a label ({names})")
        elif not found:
            problems.append(f"split {split!r} has no images in {image_dir}")
        pairs[split] = found
    if problems:
        raise ManualDataError(
            f"dataset folder {root} is incomplete:\n  - " + "\n  - ".join(problems) + f"\n{_LAYOUT}"
        )
    return pairs


def _resolve_background(background, classes: tuple[str, ...]) -> Optional[int]:
    if background is None:
        return None
    if isinstance(background, str):
        if background not in classes:
            raise ValueError(f"background class {background!r} is not in {classes}")
        return classes.index(background)
    if not 0 <= int(background) < len(classes):
        raise ValueError(f"background class {background} out of range for {len(classes)}")
    return int(background)


def read_label(path: Path, binary_masks: bool = False) -> np.ndarray:
    """A label PNG's class indices ``(H, W)``; raises ValueError naming the file.

    With ``binary_masks``, 0/255 masks become 0/1.
    """
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as lab:
            if lab.mode not in ("L", "P", "1", "I", "I;16"):
                raise ValueError(
                    f"{path}: label PNGs must hold class indices in one channel (mode L or P), "
                    f"not mode {lab.mode}"
                )
            values = np.asarray(lab)
    except (OSError, SyntaxError) as error:  # PIL's errors for a corrupt or truncated file
        raise ValueError(f"{path}: cannot read this label PNG ({error}); re-save it") from None
    if values.dtype == bool or values.max(initial=0) <= 255:
        values = values.astype(np.uint8)
    if binary_masks:
        other = np.setdiff1d(np.unique(values), (0, IGNORE_LABEL))
        if other.size:
            raise ValueError(
                f"{path}: binary_masks=True, but the label holds values {other.tolist()[:5]} "
                "besides 0 and 255"
            )
        values = (values == IGNORE_LABEL).astype(np.uint8)
    return values


def _read_pair(image: Path, label: Path, binary_masks: bool):
    data = image.read_bytes()
    try:
        decode_image(data)  # a corrupt or truncated image fails here, named, not in training
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{image}: cannot read this image ({error}); re-save it") from None
    return data, read_label(label, binary_masks)


def survey_labels(
    pairs: dict[str, list[tuple[Path, Path]]],
    classes: tuple[str, ...],
    *,
    binary_masks: bool = False,
) -> dict[str, np.ndarray]:
    """Reads every label of ``pairs`` and checks the dataset as a whole before it is written.

    Returns:
      ``split -> (num_classes + 1,)`` pixel counts per class, the last entry the ignored pixels.

    Raises:
      ValueError: a label that cannot be read, or holds values that are neither a class index
        nor 255 (all such files are named), or labels that look like binary masks saved as
        0/255 without ``binary_masks=True``.
    """
    num_classes = len(classes)
    counts, bad_files, bad_values = {}, [], set()
    for split, found in pairs.items():
        split_counts = np.zeros(num_classes + 1, np.int64)
        for _, label_path in found:
            values = read_label(label_path, binary_masks)
            histogram = np.bincount(values.ravel(), minlength=IGNORE_LABEL + 1)
            wrong = np.flatnonzero(histogram[num_classes:IGNORE_LABEL]) + num_classes
            if wrong.size:
                bad_files.append(str(label_path))
                bad_values.update(wrong.tolist())
            split_counts[:num_classes] += histogram[:num_classes]
            split_counts[num_classes] += histogram[IGNORE_LABEL]
        counts[split] = split_counts
    if bad_files:
        raise ValueError(
            f"label values {sorted(bad_values)[:10]} are neither a class index (< {num_classes}, "
            f"see {_CLASSES_FILE}) nor the ignore label 255, in {len(bad_files)} files: "
            + ", ".join(bad_files[:5])
        )
    total = sum(counts.values())
    if (
        not binary_masks
        and num_classes == 2
        and total[num_classes] > 0
        and not total[1:num_classes].any()
    ):
        raise ValueError(
            "every label holds only 0 and 255: binary masks saved as 0/255? Here 255 means "
            f"'ignore', so the foreground ({classes[1]!r}) would never be trained or scored. "
            "Pass binary_masks=True to read 255 as class 1, or save the foreground as 1."
        )
    never = [classes[k] for k in range(num_classes) if total[k] == 0]
    if never:
        log.warning(
            "Classes %s occur in no label of the dataset (check %s and the label values).",
            never,
            _CLASSES_FILE,
        )
    for split, split_counts in counts.items():
        if not split_counts[:num_classes].any():
            log.warning(
                "Split %r has no labelled pixel (every label pixel is 255, 'ignore'): it "
                "would train with a zero loss and cannot be scored.",
                split,
            )
    return counts


def fingerprint(pairs: dict[str, list[tuple[Path, Path]]], root: Path, *settings) -> str:
    """A hash of the class list, every file's path, size and modification time, and ``settings``."""
    digest = hashlib.sha256((root / _CLASSES_FILE).read_bytes())
    digest.update(repr(settings).encode())
    for split in sorted(pairs):
        for image, label in pairs[split]:
            for path in (image, label):
                stat = path.stat()
                digest.update(
                    f"{split}/{path.relative_to(root)}/{stat.st_size}/{stat.st_mtime_ns}".encode()
                )
    return digest.hexdigest()[:16]


class FolderSegmentation(tfds.core.GeneratorBasedBuilder):
    """Images + label PNGs + ``classes.txt`` in a folder, as array_record (see module doc)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = []  # every user dataset brings its own FolderConfig

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default probes `importlib_resources`, which it does not install.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        config: FolderConfig = self.builder_config
        root = Path(config.root_dir).expanduser()
        if (root / _CLASSES_FILE).is_file():
            classes = _read_classes(root)
        else:  # reading back prepared files: the metadata restores the classes
            classes = ()
        metadata = {
            "name": config.name,
            "classes": list(classes),
            "background_class": _resolve_background(config.background_class, classes)
            if classes
            else None,
            "ignore_label": IGNORE_LABEL,
            "binary_masks": config.binary_masks,
            "fingerprint": config.fingerprint,
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Segmentation images and label PNGs from {root}.",
            features=features(),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(metadata),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config: FolderConfig = self.builder_config
        pairs = scan_folder(config.root_dir)
        num_classes = len(_read_classes(Path(config.root_dir).expanduser()))
        return {
            split: self._generate_examples(found, Path(config.root_dir), num_classes)
            for split, found in pairs.items()
        }

    def _generate_examples(self, found, root: Path, num_classes: int):
        binary = self.builder_config.binary_masks
        for image, label in found:
            rel = image.relative_to(root).as_posix()
            read = functools.partial(_read_pair, image, label, binary)
            yield from encode_example(Pair(key=rel, file_name=rel, read=read), num_classes)


def build_folder(
    root_dir: Union[str, os.PathLike],
    *,
    name: Optional[str] = None,
    background_class: Optional[Union[int, str]] = None,
    binary_masks: bool = False,
    overwrite: bool = False,
    data_dir: Optional[Union[str, os.PathLike]] = None,
) -> FolderSegmentation:
    """Prepares the dataset in ``root_dir`` as ``folder_segmentation/<name>`` (array_record).

    Args:
      root_dir: the dataset folder (``~`` and environment variables are expanded).
      name: the dataset's name in ``data_dir`` (default: the folder's name, lower-cased).
      background_class: index or name of the class that takes pixels no prompt claims; None
        if the data has no background class.
      binary_masks: the labels are binary masks saved as 0/255: read 255 as class 1 (the
        second line of classes.txt) instead of "ignore".
      overwrite: rebuild even if the folder did not change since it was prepared.
      data_dir: where tfds datasets live (tfds' default if None).

    Returns:
      The prepared builder (``builder.info.metadata`` holds classes and background class).

    Raises:
      ManualDataError: the folder is missing or incomplete (the layout is in the message).
      ValueError: unreadable files or wrong label values (each file named), 0/255 binary masks
        without ``binary_masks``, a background class not in classes.txt.
    """
    root = Path(os.path.expandvars(os.fspath(root_dir))).expanduser().resolve()
    if data_dir is not None:
        data_dir = Path(os.path.expandvars(os.fspath(data_dir))).expanduser()
    pairs = scan_folder(root)  # fail early, with the layout in the message
    classes = _read_classes(root)
    _resolve_background(background_class, classes)
    survey_labels(pairs, classes, binary_masks=binary_masks)
    config = FolderConfig(
        name=name or _default_name(root),
        description=f"Segmentation data from {root}",
        root_dir=str(root),
        background_class=background_class,
        binary_masks=binary_masks,
        fingerprint=fingerprint(pairs, root, background_class, binary_masks),
    )
    builder = FolderSegmentation(config=config, data_dir=data_dir, file_format="array_record")
    prepared = Path(builder.data_dir)
    if prepared.exists():
        stale = _stored_fingerprint(prepared) != config.fingerprint
        if stale or overwrite:
            why = "its folder changed since it was prepared" if stale else "overwrite=True"
            log.warning("Rebuilding folder:%s (%s).", config.name, why)
            shutil.rmtree(prepared)
            builder = FolderSegmentation(
                config=config, data_dir=data_dir, file_format="array_record"
            )
    builder.download_and_prepare()
    return builder


def _stored_fingerprint(prepared: Path) -> Optional[str]:
    """The fingerprint a prepared dataset was built from (None for one built before them)."""
    metadata = prepared / "metadata.json"  # where tfds stores a builder's MetadataDict
    if not metadata.is_file():
        return None
    return json.loads(metadata.read_text()).get("fingerprint")


def _prepared(name: str, data_dir) -> tfds.core.DatasetBuilder:
    """The builder of a dataset prepared by :func:`build_folder`, or FileNotFoundError."""
    try:
        return tfds.builder(f"folder_segmentation/{name}", data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError) as error:
        raise FileNotFoundError(
            f"folder:{name} is not prepared in {data_dir or 'the default tfds data dir'} ({error}); "
            f"prepare it with mopeft_jax.data.folder.build_folder(<your folder>, name={name!r}, "
            "data_dir=...)"
        ) from None


def dataset_info(name: str, data_dir: Optional[Union[str, os.PathLike]] = None) -> DatasetInfo:
    """The :class:`~mopeft_jax.data.registry.DatasetInfo` of a dataset prepared by :func:`build_folder`.

    Its evaluation split is ``val`` if the folder has one, else ``test``, else ``train``.
    """
    info = _prepared(name, data_dir).info
    splits = set(info.splits)
    eval_split = next((s for s in ("val", "test") if s in splits), "train")
    metadata = info.metadata
    return DatasetInfo(
        name,
        DOMAIN,
        tuple(metadata["classes"]),
        metadata.get("background_class"),
        metadata.get("ignore_label", IGNORE_LABEL),
        eval_split,
        info.description,
    )


def data_source(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]] = None):
    """Random-access numpy source of a split prepared by :func:`build_folder`."""
    return tfds.data_source(f"folder_segmentation/{name}", split=split, data_dir=data_dir)
