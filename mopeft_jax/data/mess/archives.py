"""Reading what users download: folders, zip archives (read in place), tar archives (extracted).

A download is read through a :class:`Source`: the files of one resource (an archive, several
archive parts, or a folder), addressed by posix paths relative to the dataset's root inside it.
The root is located by *markers* (paths relative to it, ``fnmatch`` patterns allowed), so an
archive with or without a top-level folder, a git clone and GitHub's "Download ZIP" all work.

Zip members are random access, so zips are read in place; tar archives, archives nested in
archives and encrypted zips are extracted once into a work folder. ``tensorflow_datasets``' own
extractor is not used: it goes through ``tf.io.gfile``, i.e. TensorFlow.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import logging
import os
import posixpath
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Iterable, Optional, Sequence, Union

from PIL import Image

from mopeft_jax.data.records import ManualDataError, decode_image

__all__ = ["Source", "locate", "open_tree"]

log = logging.getLogger(__name__)


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


def open_tree(path: Path, label: str, workdir: Path, password: Optional[bytes] = None) -> _Tree:
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

    def image(self, rel: str, *, allow_truncated: bool = False) -> Image.Image:
        """The decoded image (mode as stored: ``P`` keeps palette indices, ``1`` is binary).

        ``allow_truncated`` as :func:`~mopeft_jax.data.records.decode_image`.
        """
        return decode_image(self.image_bytes(rel), allow_truncated=allow_truncated)

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
            trees = [open_tree(local, label, self.workdir, password)]
        else:
            raise ManualDataError(f"{self.label}: lacks {rel} (nor is it unpacked as {stem}/)")
        return locate(trees, markers, label, self.workdir)


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


def locate(trees: Sequence[_Tree], markers: Sequence[str], label: str, workdir: Path) -> Source:
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
