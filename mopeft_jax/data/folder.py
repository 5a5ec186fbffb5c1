"""A tfds builder for a user's own segmentation data: a folder of images and label PNGs.

Layout (splits are subfolders; either nesting works)::

    my_data/
      classes.txt              one class name per line; line k (from 0) is label value k
      train/images/a.jpg       any image PIL reads (jpg, png, tif, bmp, ...)
      train/labels/a.png       same stem; single-channel PNG of class indices, 255 = ignore
      val/images/...  val/labels/...

or ``my_data/images/<split>/...`` with ``my_data/labels/<split>/...``. A folder without split
subfolders (``my_data/images/*`` and ``my_data/labels/*``) is one ``train`` split. The prepared
dataset has the features of the MESS builders (``image``, ``label``, ``file_name``) and their
metadata (``classes``, ``background_class``, ``ignore_label``), is written as array_record and is
read with numpy only::

    from mopeft_jax.data import folder

    folder.build_folder("~/my_data", background_class="background", data_dir="~/tfds")
    source = folder.data_source("my_data", "train", data_dir="~/tfds")

With plain tfds the same data is ``tfds.data_source("folder_segmentation/my_data", ...)``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from mopeft_jax.data.records import ManualDataError, Pair, encode_example, features
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
    """

    root_dir: str = ""
    background_class: Optional[Union[int, str]] = None


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


def _read_pair(image: Path, label: Path):
    with Image.open(io.BytesIO(label.read_bytes())) as lab:
        if lab.mode not in ("L", "P", "1", "I", "I;16"):
            raise ValueError(
                f"{label}: label PNGs must hold class indices in one channel (mode L or P), "
                f"not mode {lab.mode}"
            )
        values = np.asarray(lab)
    if values.dtype == bool or values.max(initial=0) <= 255:
        values = values.astype(np.uint8)
    return image.read_bytes(), values


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
        for image, label in found:
            rel = image.relative_to(root).as_posix()
            pair = Pair(key=rel, file_name=rel, read=functools.partial(_read_pair, image, label))
            yield from encode_example(pair, num_classes)


def build_folder(
    root_dir: Union[str, os.PathLike],
    *,
    name: Optional[str] = None,
    background_class: Optional[Union[int, str]] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
) -> FolderSegmentation:
    """Prepares the dataset in ``root_dir`` as ``folder_segmentation/<name>`` (array_record).

    Args:
      root_dir: the dataset folder.
      name: the dataset's name in ``data_dir`` (default: the folder's name, lower-cased).
      background_class: index or name of the class that takes pixels no prompt claims; None
        if the data has no background class.
      data_dir: where tfds datasets live (tfds' default if None).

    Returns:
      The prepared builder (``builder.info.metadata`` holds classes and background class).
    """
    root = Path(root_dir).expanduser().resolve()
    scan_folder(root)  # fail early, with the layout in the message
    config = FolderConfig(
        name=name or _default_name(root),
        description=f"Segmentation data from {root}",
        root_dir=str(root),
        background_class=background_class,
    )
    builder = FolderSegmentation(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder


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
