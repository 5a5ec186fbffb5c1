"""Shared machinery of the MESS dataset builders: one declarative spec per dataset.

A dataset is a :class:`MessSpec`: the files a user downloads into the *manual directory*
(:class:`Resource`), a function that finds the image/label pairs of every split inside them, the
class names, the background class, the domain and MESS's evaluation split. :func:`register` turns
a spec into a ``tensorflow_datasets`` builder (``GeneratorBasedBuilder``) and records it in
:data:`REGISTRY`. Every builder writes the same features:

* ``image``: ``uint8 (H, W, 3)``, stored encoded (JPEG/PNG as downloaded when possible, else PNG);
* ``label``: ``uint8 (H, W)`` class indices, :data:`IGNORE_LABEL` (255) for ignored pixels;
* ``file_name``: the source image's path inside its archive (plus ``_<tile>`` for tiled images).

The files are written as array_record and read back with ``tfds.data_source`` (numpy, no
TensorFlow). Two details of ``tensorflow_datasets`` shape this module: encoding an image from a
numpy array calls TensorFlow, so images are handed over as encoded bytes; and its archive
extractor uses ``tf.io.gfile``, so archives are read here with :mod:`zipfile`/:mod:`tarfile`.

Archives are read in place where possible (zip members are random access), and extracted into
the tfds download directory otherwise (tar archives, archives nested in archives, encrypted zips).
A resource may also be given already extracted, as a folder. Inside an archive the dataset's files
are located by *markers* (paths relative to the dataset's root, ``fnmatch`` patterns allowed), so
an archive with or without a top-level folder, a git clone and GitHub's "Download ZIP" all work.

Besides the MESS datasets, a few *training sources* are registered the same way: datasets that
MESS does not evaluate but that give a train split to the MESS datasets without one (DRIVE and
STARE for CHASE DB1, MoNuSeg for CryoNuSeg); their ``mess_name`` is None.

The label mappings follow the MESS preparation scripts (``blumenstiel/MESS``,
``mess/prepare_datasets/prepare_*.py``); where MESS leaves pixels that match no entry of a colour
table at an arbitrary value, they are set to the ignore label here, and every label map is checked
to hold only class indices and 255.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import gzip
import hashlib
import inspect
import io
import logging
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
import types
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from mopeft_jax.data.registry import DatasetInfo
from mopeft_jax.segments import IGNORE_LABEL

__all__ = [
    "DEV_SPLIT",
    "DOMAINS",
    "IGNORE_LABEL",
    "ManualDataError",
    "MessSpec",
    "SizeMismatchError",
    "Pair",
    "REGISTRY",
    "Resource",
    "Source",
    "build",
    "builder_class",
    "carve_dev",
    "check_manual_dir",
    "data_source",
    "encode_example",
    "features",
    "first_channel",
    "get_spec",
    "lut_map",
    "nonblack",
    "register",
    "rgb_map",
    "stem_pairs",
    "tiles",
]

log = logging.getLogger(__name__)


DEV_SPLIT = "dev"
"""Name of the split carved from ``train`` for datasets that MESS evaluates on ``val``."""

DOMAINS = (
    "General",
    "Earth Monitoring",
    "Medical Sciences",
    "Engineering",
    "Agriculture and Biology",
)
"""The five MESS domains, in MESS's order."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_PNG_COMPRESS_LEVEL = 4  # images re-encoded by us: fast enough for 1024 px tiles, still small


class ManualDataError(FileNotFoundError):
    """The manual directory lacks files a builder needs (or they lack expected content)."""


class SizeMismatchError(ValueError):
    """An image and its label differ in size (a corrupt pair of a third-party download)."""


# ---------------------------------------------------------------------------------------------
# Reading files: folders, zip archives (read in place), tar archives (extracted)
# ---------------------------------------------------------------------------------------------


class _Tree:
    """Read-only set of files, addressed by posix paths (no leading slash)."""

    label: str  # how messages name it (a path in the manual directory)

    def paths(self) -> Sequence[str]:
        raise NotImplementedError

    def open(self, path: str) -> IO[bytes]:
        raise NotImplementedError

    def local_path(self, path: str) -> Optional[Path]:
        """The file on disk, where there is one (lets nested archives be opened in place)."""
        return None


class _DirTree(_Tree):
    """A folder; its own name is the first component of every path.

    Keeping the name lets markers such as ``"segmentations/*/*.png"`` match whether the user gave
    the archive or the folder it unpacks to.
    """

    def __init__(self, root: Path, label: str):
        self.root = Path(root)
        self.label = label
        self._paths: Optional[list[str]] = None

    def paths(self) -> Sequence[str]:
        if self._paths is None:
            name = self.root.name
            found = []
            for dirpath, _, filenames in os.walk(self.root, followlinks=True):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                prefix = name if rel == "." else f"{name}/{rel}"
                found.extend(f"{prefix}/{f}" for f in filenames)
            self._paths = sorted(found)
        return self._paths

    def local_path(self, path: str) -> Path:
        return self.root.joinpath(*path.split("/")[1:])

    def open(self, path: str) -> IO[bytes]:
        return open(self.local_path(path), "rb")


class _ZipTree(_Tree):
    """A zip archive, read in place."""

    def __init__(self, path: Path, label: str, password: Optional[bytes] = None):
        self.label = label
        self._zip = zipfile.ZipFile(path)
        if password:
            self._zip.setpassword(password)
        self._paths = sorted(n for n in self._zip.namelist() if not n.endswith("/"))

    def paths(self) -> Sequence[str]:
        return self._paths

    def open(self, path: str) -> IO[bytes]:
        return self._zip.open(path)


def _is_zip(name: str) -> bool:
    return name.lower().endswith(".zip")


def _is_tar(name: str) -> bool:
    return name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _extract(archive: Path, dest: Path, is_tar: bool, password: Optional[bytes] = None) -> Path:
    """Extracts ``archive`` into ``dest`` once (a ``.done`` marker makes later calls free)."""
    done = dest.with_name(dest.name + ".done")
    if done.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # left over from an interrupted extraction
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tmp = tmp.resolve()
    log.info("Extracting %s to %s", archive, dest)
    if is_tar:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")  # refuses links and paths out of tmp
            else:  # Python < 3.10.12 / 3.11.4: check the members ourselves
                for member in tar.getmembers():
                    target = (tmp / member.name).resolve()
                    if member.issym() or member.islnk() or not target.is_relative_to(tmp):
                        raise ValueError(f"{archive}: refusing member {member.name!r}")
                tar.extractall(tmp)
    elif password and shutil.which("unzip"):
        # zipfile decrypts ZipCrypto in pure Python at ~1 MB/s; Info-ZIP is far faster.
        subprocess.run(
            ["unzip", "-q", "-P", password.decode(), str(archive), "-d", str(tmp)], check=True
        )
    else:
        if password:
            log.warning("Decrypting %s in Python (about 1 MB/s); install unzip for speed", archive)
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (tmp / name).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise ValueError(f"{archive}: member {name!r} points outside the archive")
            zf.extractall(tmp, pwd=password)
    tmp.rename(dest)
    done.touch()
    return dest


def _open_tree(path: Path, label: str, workdir: Path, password: Optional[bytes] = None) -> _Tree:
    """A tree over a folder or archive on disk (tar and encrypted zip are extracted first)."""
    if path.is_dir():
        return _DirTree(path, label)
    if _is_zip(path.name) and not password:
        return _ZipTree(path, label)
    if _is_tar(path.name) or _is_zip(path.name):
        key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
        dest = _extract(path, workdir / f"{path.name}.{key}", _is_tar(path.name), password)
        return _DirTree(dest, label)
    try:  # a download saved without a suffix (e.g. figshare's numeric file names)
        if zipfile.is_zipfile(path):
            return _ZipTree(path, label, password)
        if tarfile.is_tarfile(path):
            key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
            return _DirTree(_extract(path, workdir / f"{path.name}.{key}", True), label)
    except OSError:
        pass
    raise ManualDataError(f"{label}: not a folder, zip or tar archive")


def _find_base(paths: Iterable[str], marker: str) -> Optional[str]:
    """The shortest prefix ``p`` such that ``p + marker`` is a file or folder in ``paths``.

    ``marker`` is an ``fnmatch`` pattern; ``"a|b"`` means either.
    """
    bases = [_find_base_one(paths, alt) for alt in marker.split("|")]
    found = [(b.count("/") + bool(b), b) for b in bases if b is not None]
    return min(found)[1] if found else None


def _find_base_one(paths: Iterable[str], pattern: str) -> Optional[str]:
    n = len(pattern.strip("/").split("/"))
    best: Optional[tuple[int, str]] = None
    for path in paths:
        parts = path.split("/")
        # Folders are implied by the files below them: try every ancestor, the file itself too.
        for end in range(len(parts), n - 1, -1):
            tail = "/".join(parts[end - n : end])
            if fnmatch.fnmatchcase(tail, pattern):
                base = "/".join(parts[: end - n])
                cand = (end - n, base)
                if best is None or cand < best:
                    best = cand
    return None if best is None else best[1]


class Source:
    """The files of one resource, relative to the dataset's root inside it.

    Paths are posix paths relative to the root that the resource's markers located (e.g. for
    ``bdd100k_images_10k.zip``, ``"images/10k/train/x.jpg"``). A resource given as several files
    (e.g. an archive in parts) is one source; its parts are searched in order.
    """

    def __init__(self, parts: Sequence[tuple[_Tree, str]], label: str, workdir: Path):
        self.label = label
        self.workdir = Path(workdir)
        self._files: dict[str, tuple[_Tree, str]] = {}
        self._dirs: dict[str, list[str]] = {}
        for tree, base in parts:
            prefix = f"{base}/" if base else ""
            for full in tree.paths():
                if full.startswith(prefix) and full != prefix:
                    self._files.setdefault(full[len(prefix) :], (tree, full))
        for rel in sorted(self._files):
            parent = posixpath.dirname(rel)
            self._dirs.setdefault(parent, []).append(rel)
            while parent:  # ancestors without files of their own are folders too
                parent = posixpath.dirname(parent)
                self._dirs.setdefault(parent, [])

    # -- queries -------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        rel = rel.strip("/")
        return rel in self._files or rel in self._dirs

    def isdir(self, rel: str) -> bool:
        return rel.strip("/") in self._dirs

    def glob(self, pattern: str) -> list[str]:
        """Sorted files and folders matching an ``fnmatch`` pattern (``*`` crosses ``/``)."""
        names = set(self._files) | set(self._dirs)
        return sorted(n for n in names if n and fnmatch.fnmatchcase(n, pattern))

    def list(
        self, folder: str, suffixes: Union[str, Sequence[str]] = "", recursive: bool = False
    ) -> list[str]:
        """Sorted files in ``folder`` (below it, if recursive) whose names end with a suffix."""
        folder = folder.strip("/")
        suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
        if recursive:
            prefix = f"{folder}/" if folder else ""
            found = [f for f in self._files if f.startswith(prefix)]
        else:
            found = list(self._dirs.get(folder, ()))
        return sorted(f for f in found if f.lower().endswith(tuple(s.lower() for s in suffixes)))

    # -- reading -------------------------------------------------------------------------------

    def open(self, rel: str) -> IO[bytes]:
        try:
            tree, full = self._files[rel]
        except KeyError:
            raise FileNotFoundError(f"{self.label}: no file {rel!r}") from None
        return tree.open(full)

    def read(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8-sig")

    def image_bytes(self, rel: str) -> bytes:
        """An image file's encoded bytes; a ``.gz`` file decompressed (STARE gzips each image)."""
        data = self.read(rel)
        return gzip.decompress(data) if rel.lower().endswith(".gz") else data

    def image(self, rel: str) -> Image.Image:
        """The decoded image (mode as stored: ``P`` keeps palette indices, ``1`` is binary)."""
        with _no_pixel_limit():
            img = Image.open(io.BytesIO(self.image_bytes(rel)))
            img.load()
        return img

    def nested(self, rel: str, markers: Sequence[str], password: Optional[bytes] = None) -> Source:
        """A source over a folder, or an archive that lies inside this source.

        ``rel`` names the archive (``"images.tar.gz"``); a folder of the same stem next to it
        (``"images"``, i.e. the archive already unpacked) is used instead where it exists.
        """
        stem = rel
        for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
            if rel.lower().endswith(ext):
                stem = rel[: -len(ext)]
                break
        label = f"{self.label}:{rel}"
        if stem != rel and self.isdir(stem):
            trees = [_PrefixTree(self, stem)]
        elif rel in self._files:
            tree, full = self._files[rel]
            local = tree.local_path(full)
            if local is None:  # inside an archive: copy the member out once
                key = hashlib.blake2b(f"{self.label}:{full}".encode(), digest_size=6).hexdigest()
                local = self.workdir / key / posixpath.basename(rel)  # keeps the suffix
                if not local.exists():
                    local.parent.mkdir(parents=True, exist_ok=True)
                    tmp = local.with_name(local.name + ".partial")
                    with tree.open(full) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    tmp.rename(local)
            trees = [_open_tree(local, label, self.workdir, password)]
        else:
            raise ManualDataError(f"{self.label}: lacks {rel} (nor is it unpacked as {stem}/)")
        return _locate(trees, markers, label, self.workdir)


class _PrefixTree(_Tree):
    """A folder of a :class:`Source`, as a tree (for archives given already unpacked)."""

    def __init__(self, source: Source, folder: str):
        self.label = f"{source.label}:{folder}"
        self._source = source
        self._folder = folder
        name = posixpath.basename(folder)
        self._paths = [
            f"{name}/{p[len(folder) + 1 :]}" for p in source.list(folder, recursive=True)
        ]

    def paths(self) -> Sequence[str]:
        return self._paths

    def open(self, path: str) -> IO[bytes]:
        return self._source.open(f"{self._folder}/{path.split('/', 1)[1]}")


def _locate(trees: Sequence[_Tree], markers: Sequence[str], label: str, workdir: Path) -> Source:
    """Finds each tree's dataset root by the markers; raises if a marker is missing."""
    if not markers:
        return Source([(t, "") for t in trees], label, workdir)
    located = []
    for tree in trees:
        paths = tree.paths()
        base = None
        for marker in markers:
            base = _find_base(paths, marker)
            if base is not None:
                break
        located.append((tree, base))
    if any(base is None for _, base in located):
        raise ManualDataError(f"{label}: contains none of {', '.join(markers)}")
    source = Source(located, label, workdir)
    absent = [m for m in markers if not any(source.glob(alt) for alt in m.split("|"))]
    if absent:
        raise ManualDataError(f"{label}: lacks {', '.join(absent)}")
    return source


@contextlib.contextmanager
def _no_pixel_limit():
    """Aerial tiles (iSAID, Potsdam) exceed PIL's decompression-bomb guard; the data is trusted."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


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
      optional: a resource that only adds a split (e.g. test data published separately); when
        it is missing, ``splits`` gets no source for it. Found but incomplete is still an error.
    """

    key: str
    names: tuple[str, ...]
    markers: tuple[str, ...]
    description: str
    password: Optional[bytes] = None
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class Pair:
    """One image and its label map, read lazily.

    Attributes:
      key: unique within its split.
      file_name: stored as the example's ``file_name`` (tiles get ``_<index>`` appended).
      read: returns ``(image, label)``: the image as encoded bytes, a PIL image or an
        ``(H, W, 3)`` uint8 array; the label as an ``(H, W)`` integer array of class indices and
        255 (ignore).
      group: examples of one group land on the same side when a dev split is carved (frames of
        one video sequence, tiles of one image); defaults to ``key``.
    """

    key: str
    file_name: str
    read: Callable[[], tuple[Any, np.ndarray]]
    group: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class MessSpec:
    """Everything a MESS builder needs to know about its dataset.

    Attributes:
      name: registry key (``"bdd100k"``); the tfds builder is ``"mess_" + name``.
      title: display name as MESS prints it (``"BDD100K"``).
      domain: one of :data:`DOMAINS`.
      homepage: the dataset's page.
      description: a few sentences: what it is, which image modality, how labels were mapped.
      classes: class names; label value ``k`` is ``classes[k]``.
      background_class: class that takes pixels no prompt claims (MESS metadata), or ``None``
        where the dataset has none (MESS registers 255 there).
      eval_split: the split MESS evaluates (``"test"`` or ``"val"``); for a training source, which
        MESS does not evaluate, ``"train"``, the one split every download of it has.
      mess_name: MESS's registered (detectron2) dataset name, e.g. ``"bdd100k_sem_seg_val"``;
        ``None`` for a training source (a dataset that is not in MESS, see ``train_source_for``).
      resources: what the manual directory must hold.
      splits: ``splits(sources) -> {split: [Pair, ...]}``, given one :class:`Source` per resource.
      dev_fraction: if > 0, a ``dev`` split of about this fraction of ``train``'s groups is carved
        from ``train`` (deterministically).
      tile_size: if set, images and labels are cut into non-overlapping tiles of this size, the
        last row/column padded with 0 (image) and 255 (label), as MESS does for large images.
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
    download: str = ""
    notes: str = ""
    train_source_for: tuple[str, ...] = ()

    def __post_init__(self):
        if self.domain not in DOMAINS:
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

    @property
    def tfds_name(self) -> str:
        return f"mess_{self.name}"

    @property
    def num_classes(self) -> int:
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
        )

    def metadata(self) -> dict[str, Any]:
        """The dataset-level metadata stored with the prepared files (JSON-serialisable)."""
        return {
            "name": self.name,
            "title": self.title,
            "domain": self.domain,
            "classes": list(self.classes),
            "background_class": self.background_class,
            "ignore_label": IGNORE_LABEL,
            "eval_split": self.eval_split,
            "mess_name": self.mess_name,
            "train_source_for": list(self.train_source_for),
        }

    def manual_instructions(self) -> str:
        """What to put into the manual directory (tfds ``MANUAL_DOWNLOAD_INSTRUCTIONS``)."""
        lines = [f"{self.title} ({self.homepage}). Put into the manual directory:"]
        for res in self.resources:
            names = " or ".join(res.names)
            optional = " (optional)" if res.optional else ""
            lines.append(f"  - {names}{optional}: {res.description}")
        if self.download:
            lines.append(self.download)
        return "\n".join(lines)


REGISTRY: dict[str, MessSpec] = {}
"""All registered MESS specs by name (a read-only view is exported by the package)."""

_BUILDERS: dict[str, type] = {}


def get_spec(name: str) -> MessSpec:
    """The spec registered as ``name`` (``"bdd100k"``; ``"mess_bdd100k"`` works too)."""
    key = name[len("mess_") :] if name.startswith("mess_") and name not in REGISTRY else name
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown MESS dataset {name!r}; known: {sorted(REGISTRY)}") from None


# ---------------------------------------------------------------------------------------------
# Resolving the manual directory
# ---------------------------------------------------------------------------------------------


def _resolve(spec: MessSpec, manual_dir: Optional[Path], workdir: Path) -> dict[str, Source]:
    """One source per resource; raises one :class:`ManualDataError` listing every problem."""
    problems: dict[str, str] = {}
    sources: dict[str, Source] = {}
    if manual_dir is not None:
        manual_dir = Path(manual_dir).expanduser()
    if manual_dir is None or not manual_dir.is_dir():
        problems = {res.key: "missing" for res in spec.resources}
    else:
        for res in spec.resources:
            matches: list[Path] = []
            for pattern in res.names:
                matches = sorted(p for p in manual_dir.glob(pattern) if not p.name.startswith("."))
                if matches:
                    break
            if not matches:
                problems[res.key] = "missing"
                if res.optional:
                    log.info("%s: optional %s not found; its split is left out", spec.name, res.key)
                continue
            try:
                trees = [
                    _open_tree(m, str(m.relative_to(manual_dir)), workdir / res.key, res.password)
                    for m in matches
                ]
                label = ", ".join(str(m.relative_to(manual_dir)) for m in matches)
                sources[res.key] = _locate(trees, res.markers, label, workdir / res.key)
            except (ManualDataError, zipfile.BadZipFile, tarfile.TarError) as err:
                problems[res.key] = f"found, but incomplete or unreadable ({err})"
    optional = {res.key for res in spec.resources if res.optional}
    # An optional resource may be absent; given but unreadable, it is as wrong as any other.
    if any(state != "missing" or key not in optional for key, state in problems.items()):
        raise ManualDataError(_missing_message(spec, manual_dir, problems))
    return sources


def _missing_message(spec: MessSpec, manual_dir: Optional[Path], problems: Mapping[str, str]):
    where = manual_dir if manual_dir is not None else "(no manual directory given)"
    lines = [
        f"MESS dataset {spec.name!r} ({spec.title}): the manual directory {where} is missing "
        "or incomplete. It must hold:"
    ]
    for res in spec.resources:
        state = problems.get(res.key, "ok")
        optional = " (optional)" if res.optional else ""
        lines.append(f"  - {' or '.join(res.names)}{optional}  [{state}]")
        lines.append(f"      {res.description}")
    lines.append(f"Dataset page: {spec.homepage}")
    if spec.download:
        lines.append(spec.download)
    lines.append(
        "Pass the folder as tfds.download.DownloadConfig(manual_dir=...) "
        "(or mopeft_jax.data.mess.build(name, manual_dir=...))."
    )
    return "\n".join(lines)


def check_manual_dir(name: str, manual_dir: Union[str, os.PathLike], workdir=None) -> None:
    """Raises :class:`ManualDataError` unless ``manual_dir`` holds what ``name`` needs.

    Tar archives are extracted into ``workdir`` (a temporary folder by default) to be checked.
    """
    spec = get_spec(name)
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            _resolve(spec, Path(manual_dir).expanduser(), Path(tmp))
    else:
        _resolve(spec, Path(manual_dir).expanduser(), Path(workdir))


# ---------------------------------------------------------------------------------------------
# Labels and images
# ---------------------------------------------------------------------------------------------


def lut_map(values: np.ndarray, mapping: Mapping[int, int], default: int = IGNORE_LABEL):
    """Maps integer label values through ``mapping``; values not in it become ``default``."""
    values = np.asarray(values)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    lut = np.full(max(256, int(values.max(initial=0)) + 1), default, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[values]


def rgb_map(rgb: np.ndarray, colours: Mapping[tuple[int, int, int], int], default=IGNORE_LABEL):
    """Maps an ``(H, W, 3)`` colour-coded label to class indices; other colours -> ``default``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"expected an RGB label image, got shape {rgb.shape}")
    code = rgb[..., 0].astype(np.uint32) << 16 | rgb[..., 1].astype(np.uint32) << 8 | rgb[..., 2]
    out = np.full(code.shape, default, np.uint8)
    for (r, g, b), idx in colours.items():
        out[code == (r << 16 | g << 8 | b)] = idx
    return out


def tiles(array: np.ndarray, size: int, pad_value: int) -> list[np.ndarray]:
    """Non-overlapping ``size x size`` tiles, row-major, the ragged border padded (as MESS)."""
    h, w = array.shape[:2]
    out = []
    for y in range(0, h, size):
        for x in range(0, w, size):
            tile = array[y : y + size, x : x + size]
            if tile.shape[:2] != (size, size):
                padded = np.full((size, size) + array.shape[2:], pad_value, array.dtype)
                padded[: tile.shape[0], : tile.shape[1]] = tile
                tile = padded
            out.append(tile)
    return out


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, (bytes, bytearray)):
        with _no_pixel_limit():
            image = Image.open(io.BytesIO(image))
            image.load()
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def _encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _encoded_rgb(image) -> tuple[bytes, tuple[int, int]]:
    """``(encoded bytes, (H, W))``; downloaded RGB JPEG/PNG bytes are kept as they are."""
    if isinstance(image, (bytes, bytearray)):
        with _no_pixel_limit():
            probe = Image.open(io.BytesIO(image))
        if probe.mode == "RGB" and probe.format in ("JPEG", "PNG"):
            return bytes(image), (probe.height, probe.width)
    array = _as_rgb_array(image)
    return _encode_png(array), array.shape[:2]


def features() -> tfds.features.FeaturesDict:
    """The features of every segmentation builder here (MESS and folder)."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "label": tfds.features.Tensor(
                shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
            ),
            "file_name": tfds.features.Text(),
        }
    )


def _check_label(label, num_classes: int, where: str) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{where}: label must be 2-D, got shape {label.shape}")
    bad = (label >= num_classes) & (label != IGNORE_LABEL)
    if bad.any() or (label < 0).any():
        values = np.unique(label[bad | (label < 0)])[:10]
        raise ValueError(
            f"{where}: label values {values.tolist()} are neither a class index "
            f"(< {num_classes}) nor the ignore label {IGNORE_LABEL}"
        )
    return label.astype(np.uint8)


def encode_example(
    pair: Pair, num_classes: int, tile_size: Optional[int] = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Reads a pair and yields its ``(key, example)`` tuples (one per tile when tiling)."""
    image, label = pair.read()
    label = _check_label(label, num_classes, pair.file_name)
    if tile_size is None:
        encoded, shape = _encoded_rgb(image)
        if tuple(shape) != label.shape:
            raise SizeMismatchError(
                f"{pair.file_name}: image is {tuple(shape)} but label is {label.shape}"
            )
        yield pair.key, {"image": encoded, "label": label, "file_name": pair.file_name}
        return
    array = _as_rgb_array(image)
    if array.shape[:2] != label.shape:
        raise SizeMismatchError(
            f"{pair.file_name}: image is {array.shape[:2]} but label is {label.shape}"
        )
    stem = posixpath.splitext(pair.file_name)[0]
    image_tiles = tiles(array, tile_size, 0)
    label_tiles = tiles(label, tile_size, IGNORE_LABEL)
    for i, (img, lab) in enumerate(zip(image_tiles, label_tiles)):
        yield (
            f"{pair.key}_{i}",
            {"image": _encode_png(img), "label": lab, "file_name": f"{stem}_{i}.png"},
        )


def stem_pairs(
    images: Source,
    image_dir: str,
    labels: Source,
    label_dir: str,
    to_label: Callable[[Image.Image], np.ndarray],
    *,
    label_name: Union[str, Callable[[str], str]] = "{stem}.png",
    image_suffixes: Sequence[str] = _IMAGE_SUFFIXES,
    recursive: bool = False,
    group: Optional[Callable[[str], str]] = None,
    file_name: Optional[Callable[[str], str]] = None,
) -> list[Pair]:
    """Pairs every image in ``image_dir`` with the label file of the same stem.

    ``label_name`` formats the label's file name from the image's ``stem`` (a callable gets the
    stem and returns the name); with ``recursive``, an image in ``image_dir/a/b`` looks for its
    label in ``label_dir/a/b``. Images without a label are skipped (and counted in the log).
    ``to_label`` turns the decoded label image into class indices; ``group`` and ``file_name`` map
    the image's path relative to ``image_dir``.
    """
    pairs = []
    skipped = 0
    for path in images.list(image_dir, image_suffixes, recursive=recursive):
        rel = path[len(image_dir.strip("/")) + 1 :] if image_dir.strip("/") else path
        sub, base = posixpath.split(rel)
        stem = posixpath.splitext(base)[0]
        name = label_name(stem) if callable(label_name) else label_name.format(stem=stem)
        label_path = posixpath.join(label_dir, sub, name)
        if not labels.exists(label_path):
            skipped += 1
            continue
        pairs.append(
            Pair(
                key=rel,
                file_name=file_name(rel) if file_name else rel,
                read=functools.partial(_read_pair, images, path, labels, label_path, to_label),
                group=group(rel) if group else None,
            )
        )
    if skipped:
        log.info("%s: %d images in %s have no label; skipped", images.label, skipped, image_dir)
    return pairs


def _read_pair(images: Source, image_path, labels: Source, label_path, to_label):
    return images.image_bytes(image_path), to_label(labels.image(label_path))


def first_channel(image: Image.Image) -> np.ndarray:
    """The label image's values; channel 0 where a single-channel label was saved as RGB(A)."""
    array = np.asarray(image)
    return array[..., 0] if array.ndim == 3 else array


def nonblack(image: Image.Image) -> np.ndarray:
    """A binary label: 1 where the label image is not black (any colour channel > 0), else 0.

    Palette images (GIF) are judged by their colours: their indices need not put black first.
    """
    return np.asarray(image.convert("RGB")).any(axis=-1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Dev split and builders
# ---------------------------------------------------------------------------------------------


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


class MessBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of every MESS builder; concrete ones are made by :func:`register`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: MESS label mappings, array_record."}
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
        workdir = Path(dl_manager.download_dir) / "mess_extracted" / spec.name
        manual_dir = _manual_dir_of(dl_manager)
        sources = _resolve(spec, manual_dir, workdir)
        splits = {k: list(v) for k, v in spec.splits(sources).items()}
        if spec.dev_fraction:
            splits["train"], splits[DEV_SPLIT] = carve_dev(
                splits["train"], spec.dev_fraction, spec.name
            )
        empty = [s for s, pairs in splits.items() if not pairs]
        if empty:
            problems = {
                res.key: f"found, but no image/label pairs for split(s) {', '.join(empty)}"
                for res in spec.resources
            }
            raise ManualDataError(_missing_message(spec, manual_dir, problems))
        return {split: self._generate_examples(pairs) for split, pairs in splits.items()}

    def _generate_examples(self, pairs: Sequence[Pair]):
        skipped = 0
        for pair in pairs:
            try:
                # Read all tiles first, so that a failing pair adds no example at all.
                examples = list(encode_example(pair, self.SPEC.num_classes, self.SPEC.tile_size))
            except SizeMismatchError as err:
                # A few third-party training pairs are corrupt; one must not sink a whole build.
                # Wrong label *values* still raise: they mean a wrong mapping.
                log.warning("%s: skipped: %s", self.SPEC.name, err)
                skipped += 1
                continue
            yield from examples
        if skipped:
            log.warning(
                "%s: skipped %d image/label pairs of different sizes", self.SPEC.name, skipped
            )


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


# ---------------------------------------------------------------------------------------------
# User entry points
# ---------------------------------------------------------------------------------------------


def build(
    name: str,
    manual_dir: Union[str, os.PathLike],
    data_dir: Optional[Union[str, os.PathLike]] = None,
    download_dir: Optional[Union[str, os.PathLike]] = None,
) -> tfds.core.DatasetBuilder:
    """Prepares MESS dataset ``name`` from the files in ``manual_dir`` as array_record.

    Args:
      name: registry key, e.g. ``"bdd100k"`` (see :data:`REGISTRY`).
      manual_dir: the folder holding the downloaded files (see :func:`check_manual_dir`).
      data_dir: where tfds datasets live (tfds' default, ``~/tensorflow_datasets``, if None).
      download_dir: where archives that cannot be read in place are extracted (tfds' default,
        ``<data_dir>/downloads``, if None); it can be deleted afterwards.

    Returns:
      The prepared builder (``builder.info`` has the splits; ``builder.info.metadata`` the
      classes, background class, ignore label and domain).
    """
    builder = builder_class(name)(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(manual_dir=str(Path(manual_dir).expanduser())),
    )
    return builder


def data_source(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]] = None):
    """A random-access numpy source of a prepared split (``tfds.data_source``)."""
    return tfds.data_source(get_spec(name).tfds_name, split=split, data_dir=data_dir)
