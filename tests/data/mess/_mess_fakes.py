"""Tiny fake downloads of the MESS datasets, laid out as the real archives are.

Every ``make_<name>(manual_dir)`` writes the files a user would download (zip/tar archives, a git
clone folder, ...) with two or three tiny images per split, and returns an :class:`Expect`: the
split sizes the builder must produce and, for some examples, the exact image and label they must
decode to. Label values are chosen to exercise each dataset's mapping (colour tables, value
remaps, thresholds, colours outside a palette), restricted to values for which MESS's own
preparation scripts define a label (tests/data/mess/test_mess_reference.py runs those scripts on
these same files); the values they leave undefined are tested in test_mess_labels.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

IGNORE = 255


@dataclasses.dataclass
class Expect:
    """What a builder must produce from a fake download.

    Attributes:
      sizes: split -> number of examples.
      labels: (split, file_name) -> the exact label map.
      images: (split, file_name) -> the exact decoded image.
    """

    sizes: dict[str, int]
    labels: dict[tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    images: dict[tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)


# -- encoding ---------------------------------------------------------------------------------


def encode(array, fmt: str = "PNG", mode: Optional[str] = None, palette=None) -> bytes:
    img = Image.fromarray(np.asarray(array)) if mode is None else _mode(array, mode)
    if palette is not None:
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _mode(array, mode):
    array = np.asarray(array)
    if mode == "1":
        return Image.fromarray(array.astype(bool))
    if mode == "P":  # the values are the palette indices
        return Image.frombytes("P", array.shape[::-1], array.astype(np.uint8).tobytes())
    return Image.fromarray(array).convert(mode)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def rgb_image(seed: int, h: int = 6, w: int = 8) -> np.ndarray:
    """A small image whose pixels identify it (so a wrong image/label pairing shows)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg(seed: int, h: int = 6, w: int = 8) -> tuple[bytes, np.ndarray]:
    """JPEG bytes and what they decode to (JPEG is lossy; builders keep the bytes)."""
    data = encode(rgb_image(seed, h, w), "JPEG")
    return data, decode(data)


def resaved(image: np.ndarray) -> np.ndarray:
    """What ``image`` decodes to after MESS re-saves it as JPEG (PIL's defaults, quality 75)."""
    return decode(encode(image, "JPEG"))


def png(seed: int, h: int = 6, w: int = 8) -> tuple[bytes, np.ndarray]:
    image = rgb_image(seed, h, w)
    return encode(image), image


def tile(array, size, pad):
    """Reference tiling (row-major, padded), written independently of the builders."""
    h, w = array.shape[:2]
    ny, nx = -(-h // size), -(-w // size)
    padded = np.full((ny * size, nx * size) + array.shape[2:], pad, array.dtype)
    padded[:h, :w] = array
    return [
        padded[y * size : (y + 1) * size, x * size : (x + 1) * size]
        for y in range(ny)
        for x in range(nx)
    ]


def colour_label(table: dict, classes: np.ndarray) -> np.ndarray:
    """An RGB label whose pixel of class c has colour table[c] (classes: (H, W) ints)."""
    return np.array([[table[int(c)] for c in row] for row in classes], np.uint8)


# -- writing ----------------------------------------------------------------------------------


def write_zip(path: Path, files: dict[str, bytes], with_dirs: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if with_dirs:  # real archives list their folders too
            dirs = sorted(
                {n.rsplit("/", i)[0] + "/" for n in files for i in range(1, n.count("/") + 1)}
            )
            for d in dirs:
                zf.writestr(d, b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes], compression: str = "gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


# -- the datasets -----------------------------------------------------------------------------


def make_bdd100k(manual: Path) -> Expect:
    images, labels, expect = {}, {}, Expect({"train": 2, "dev": 1, "val": 2})
    palette = [v for i in range(256) for v in (i, 255 - i, i // 2)]
    splits = (("train", ["a1", "a2", "a3"]), ("val", ["b1", "b2"]), ("test", ["c1"]))
    for s, (split, ids) in enumerate(splits):
        for k, image_id in enumerate(ids):
            data, image = jpeg(10 * s + k)
            images[f"bdd100k/images/10k/{split}/{image_id}.jpg"] = data
            if split == "test":
                continue  # no public test labels
            ids_map = np.array([[0, 18, 255, 7] * 2] * 6, np.uint8)
            ids_map[0, 0] = k
            labels[f"bdd100k/labels/sem_seg/colormaps/{split}/{image_id}.png"] = encode(
                ids_map, mode="P", palette=palette
            )
            labels[f"bdd100k/labels/sem_seg/masks/{split}/{image_id}.png"] = encode(ids_map)
            if split == "val":
                expect.labels[(split, f"{image_id}.jpg")] = ids_map
                expect.images[(split, f"{image_id}.jpg")] = image
    labels["bdd100k/labels/sem_seg/polygons/sem_seg_train.json"] = b"[]"
    write_zip(manual / "bdd100k_images_10k.zip", images)
    write_zip(manual / "bdd100k_sem_seg_labels_trainval.zip", labels)
    return expect


def make_dark_zurich(manual: Path) -> Expect:
    files, expect = {}, Expect({"val": 2})
    seq = "val/night/GOPR0356"
    for k in range(2):
        stem = f"GOPR0356_frame_00032{k}"
        ids = np.array([[0, 7, 8, 33, 26, 11, 19, 31]] * 6, np.uint8)
        ids[5, 5:] = (5, 34, 1)  # not class ids, but marked invalid (as MESS's script needs)
        invalid = np.zeros((6, 8), np.uint8)
        invalid[5, :] = 255
        data, image = png(100 + k)
        files[f"rgb_anon/{seq}/{stem}_rgb_anon.png"] = data
        files[f"gt/{seq}/{stem}_gt_labelIds.png"] = encode(ids)
        files[f"gt/{seq}/{stem}_gt_invGray.png"] = encode(invalid)
        files[f"gt/{seq}/{stem}_gt_labelColor.png"] = encode(rgb_image(k))
        want = np.array([[0, 1, 2, 19, 14, 3, 7, 17]] * 6, np.uint8)
        want[5, :] = IGNORE
        expect.labels[("val", f"night/GOPR0356/{stem}_rgb_anon.png")] = want
        expect.images[("val", f"night/GOPR0356/{stem}_rgb_anon.png")] = image
    files["LICENSE.txt"] = b"license"
    write_zip(manual / "Dark_Zurich_val_anon.zip", files)
    return expect


def make_mhp_v1(manual: Path) -> Expect:
    root, files = "LV-MHP-v1", {}
    expect = Expect({"train": 2, "val": 2, "test": 1})
    for i in (1, 2, 3, 4, 10):
        data, image = jpeg(i)
        files[f"{root}/images/{i}.jpg"] = data
        persons = []
        for p in range(1, 3):
            mask = np.zeros((6, 8), np.uint8)
            mask[p, :] = 10 + p  # person p wears class 10 + p
            mask[0, 0] = i % 19
            files[f"{root}/annotations/{i}_02_{p:02d}.png"] = encode(mask)
            persons.append(mask)
        want = np.maximum(*persons)
        split = "train" if i in (1, 2) else "test" if i == 3 else "val"
        expect.labels[(split, f"{i}.jpg")] = want
        expect.images[(split, f"{i}.jpg")] = resaved(image)
    files[f"{root}/train_list.txt"] = b"1.jpg\n2.jpg\n"
    files[f"{root}/test_list.txt"] = b"3.jpg\n"
    write_zip(manual / "LV-MHP-v1.zip", files)
    return expect


def make_foodseg103(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 3, "test": 2})
    for split, n in (("train", 3), ("test", 2)):
        for k in range(n):
            data, image = jpeg(200 + k)
            label = np.full((6, 8), 103, np.uint8)
            label[:, :2] = k
            label[0, 0] = IGNORE
            files[f"FoodSeg103/Images/img_dir/{split}/{k:08d}.jpg"] = data
            files[f"FoodSeg103/Images/ann_dir/{split}/{k:08d}.png"] = encode(label)
            expect.labels[(split, f"{k:08d}.jpg")] = label
            expect.images[(split, f"{k:08d}.jpg")] = image
    files["FoodSeg103/category_id.txt"] = b"0\tbackground\n"
    files["FoodSeg103/ImageSets/train.txt"] = b"00000000.jpg\n"
    if shutil.which("zip"):  # the real archive is encrypted (ZipCrypto)
        staging = write_files(manual.parent / "foodseg_staging", files)
        manual.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["zip", "-q", "-r", "-P", "LARCdataset9947", str(manual / "FoodSeg103.zip"), "."],
            cwd=staging,
            check=True,
        )
    else:  # the folder the archive unpacks to is accepted too
        write_files(manual, files)
    return expect


def make_atlantis(manual: Path) -> Expect:
    repo, files = "atlantis", {"atlantis/README.md": b"# ATLANTIS", "atlantis/code/train.py": b""}
    expect = Expect({"train": 3, "val": 1, "test": 2})
    n = {"train": 3, "val": 1, "test": 2}
    for split, count in n.items():
        for k in range(count):
            folder = ("sea", "river", "lake")[k]
            data, image = jpeg(300 + k)
            raw = np.array([[0, 1, 56, 55, 20, 0, 2, 3]] * 6, np.uint8)
            files[f"{repo}/atlantis/images/{split}/{folder}/{k}_{split}.jpg"] = data
            files[f"{repo}/atlantis/masks/{split}/{folder}/{k}_{split}.png"] = encode(raw)
            want = np.array([[IGNORE, 0, 55, 54, 19, IGNORE, 1, 2]] * 6, np.uint8)
            expect.labels[(split, f"{folder}/{k}_{split}.jpg")] = want
            expect.images[(split, f"{folder}/{k}_{split}.jpg")] = resaved(image)
    write_files(manual, files)  # a git clone
    return expect


ISAID_COLOURS = {
    0: (0, 0, 0),
    1: (0, 0, 63),
    9: (0, 0, 127),
    14: (0, 127, 255),
    15: (0, 100, 155),
}


def make_isaid(manual: Path, tile_size: int) -> Expect:
    expect = Expect({"train": 0, "dev": 0, "val": 0})
    for split, ids in (("train", ["P0001", "P0002", "P0005"]), ("val", ["P0003", "P0004"])):
        masks = {}
        for k, image_id in enumerate(ids):
            image = rgb_image(400 + k, 6, 7)
            classes = np.array([[0, 1, 9, 14, 15, 0, 1]] * 6)
            colour = colour_label(ISAID_COLOURS, classes)
            # Not in the palette: MESS keeps the red value.
            colour[0, 0] = (10, 20, 30)
            colour[1, 0] = (0, 50, 50)
            colour[2, 0] = (255, 50, 50)
            want = classes.astype(np.uint8)
            want[:3, 0] = (10, 0, IGNORE)
            # Images come in parts: one zip per part, "images/<id>.png" inside.
            part = manual / split / "images" / f"part{k % 2 + 1}.zip"
            old = dict(_read_zip(part)) if part.exists() else {}
            old[f"images/{image_id}.png"] = encode(image)
            part.unlink(missing_ok=True)
            write_zip(part, old)
            masks[f"images/{image_id}_instance_color_RGB.png"] = encode(colour)
            for i, (img_t, lab_t) in enumerate(
                zip(tile(image, tile_size, 0), tile(want, tile_size, IGNORE))
            ):
                expect.images[(split, f"{image_id}_{i}.png")] = img_t
                expect.labels[(split, f"{image_id}_{i}.png")] = lab_t
        write_zip(manual / split / "Semantic_masks" / "images.zip", masks)
        write_zip(
            manual / split / "Instance_masks" / "images.zip",
            {"images/x_instance_id_RGB.png": encode(rgb_image(0))},
        )
    n_tiles = len(tile(np.zeros((6, 7)), tile_size, 0))
    expect.sizes = {"train": 2 * n_tiles, "dev": 1 * n_tiles, "val": 2 * n_tiles}
    # The dev image is chosen by hash; its tiles are checked wherever they land.
    expect.labels = {k: v for k, v in expect.labels.items() if k[0] == "val"}
    expect.images = {k: v for k, v in expect.images.items() if k[0] == "val"}
    return expect


def _read_zip(path):
    with zipfile.ZipFile(path) as zf:
        return [(n, zf.read(n)) for n in zf.namelist() if not n.endswith("/")]


POTSDAM_COLOURS = {
    0: (255, 255, 255),
    1: (0, 0, 255),
    2: (0, 255, 255),
    3: (0, 255, 0),
    4: (255, 255, 0),
    5: (255, 0, 0),
}


def make_isprs_potsdam(manual: Path, tile_size: int) -> Expect:
    irrg, rgb, labels = {}, {}, {}
    expect = Expect({})
    areas = {"2_10": "train", "6_7": "train", "2_13": "test", "7_13": "test"}
    for k, (area, split) in enumerate(areas.items()):
        image = rgb_image(500 + k, 5, 9)
        classes = np.array([[0, 1, 2, 3, 4, 5, 0, 1, 5]] * 5)
        colour = colour_label(POTSDAM_COLOURS, classes)
        colour[0, 0] = (250, 251, 240)  # a graded white: still impervious surface
        colour[0, 1] = (255, 0, 255)  # binarises to magenta, not a label colour: ignored
        colour[0, 2] = (20, 10, 100)  # binarises to black, not a label colour: MESS's 0 (road)
        want = classes.astype(np.uint8)
        want[0, 1:3] = (IGNORE, 0)
        irrg[f"3_Ortho_IRRG/top_potsdam_{area}_IRRG.tif"] = encode(image, "TIFF")
        rgb[f"2_Ortho_RGB/top_potsdam_{area}_RGB.tif"] = encode(image[..., ::-1].copy(), "TIFF")
        labels[f"top_potsdam_{area}_label.tif"] = encode(colour, "TIFF")
        for i, (img_t, lab_t) in enumerate(
            zip(tile(image, tile_size, 0), tile(want, tile_size, IGNORE))
        ):
            expect.images[(split, f"top_potsdam_{area}_{i}.png")] = img_t
            expect.labels[(split, f"top_potsdam_{area}_{i}.png")] = lab_t
    n_tiles = len(tile(np.zeros((5, 9)), tile_size, 0))
    expect.sizes = {"train": 2 * n_tiles, "test": 2 * n_tiles}
    write_zip(
        manual / "Potsdam.zip",
        {
            "Potsdam/2_Ortho_RGB.zip": zip_bytes(rgb),
            "Potsdam/3_Ortho_IRRG.zip": zip_bytes(irrg),
            "Potsdam/5_Labels_all.zip": zip_bytes(labels),
            "Potsdam/5_Labels_all_noBoundary.zip": zip_bytes(labels),
        },
    )
    return expect


def make_floodnet(manual: Path, tile_size: int, shape=(6, 7)) -> Expect:
    files, expect = {}, Expect({})
    root = "FloodNet-Supervised_v1.0"
    n = {"train": 2, "val": 1, "test": 2}
    for split, count in n.items():
        for k in range(count):
            image_id = f"{6000 + k}"
            data, image = jpeg(600 + k, *shape)
            label = np.zeros(shape, np.uint8)
            label[:, 1:] = 9
            label[0, :3] = (3, 5, 1)
            files[f"{root}/{split}/{split}-org-img/{image_id}.jpg"] = data
            files[f"{root}/{split}/{split}-label-img/{image_id}_lab.png"] = encode(label)
            for i, (img_t, lab_t) in enumerate(
                zip(tile(image, tile_size, 0), tile(label, tile_size, IGNORE))
            ):
                expect.images[(split, f"{image_id}_{i}.jpg")] = resaved(img_t)
                expect.labels[(split, f"{image_id}_{i}.jpg")] = lab_t
    n_tiles = len(tile(np.zeros(shape), tile_size, 0))
    expect.sizes = {split: count * n_tiles for split, count in n.items()}
    write_files(manual, files)  # the Drive folder
    return expect


UAVID_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (128, 64, 128),
    3: (0, 128, 0),
    4: (128, 128, 0),
    5: (64, 0, 128),
    6: (192, 0, 192),
    7: (64, 64, 0),
}


def make_uavid(manual: Path, tile_size: int) -> Expect:
    files, expect = {}, Expect({})
    root = "uavid_v1.5_official_release_image"
    seqs = {"train": ["seq1", "seq2", "seq3"], "val": ["seq16", "seq17"], "test": ["seq21"]}
    for split, names in seqs.items():
        for s, seq in enumerate(names):
            for f in range(2 if split == "train" else 1):
                image = rgb_image(700 + 10 * s + f, 5, 6)
                files[f"{root}/uavid_{split}/{seq}/Images/{f:06d}.png"] = encode(image)
                if split == "test":
                    continue
                classes = np.array([[0, 1, 2, 3, 4, 5], [6, 7, 0, 0, 1, 1]] * 2 + [[2] * 6])
                colour = colour_label(UAVID_COLOURS, classes)
                colour[4, 5] = (38, 38, 38)  # the grey value of building's (128, 0, 0)
                want = classes.astype(np.uint8)
                want[4, 5] = 1
                files[f"{root}/uavid_{split}/{seq}/Labels/{f:06d}.png"] = encode(colour)
                for i, (img_t, lab_t) in enumerate(
                    zip(tile(image, tile_size, 0), tile(want, tile_size, IGNORE))
                ):
                    expect.images[(split, f"{seq}_{f:06d}_{i}.png")] = img_t
                    expect.labels[(split, f"{seq}_{f:06d}_{i}.png")] = lab_t
    n_tiles = len(tile(np.zeros((5, 6)), tile_size, 0))
    # 3 train sequences of 2 frames: one sequence (2 frames) is carved off as dev.
    expect.sizes = {"train": 4 * n_tiles, "dev": 2 * n_tiles, "val": 2 * n_tiles}
    expect.labels = {k: v for k, v in expect.labels.items() if k[0] == "val"}
    expect.images = {k: v for k, v in expect.images.items() if k[0] == "val"}
    write_zip(manual / "uavid_v1.5_official_release_image.zip", files)
    return expect


def make_kvasir_instrument(manual: Path) -> Expect:
    images, masks, expect = {}, {}, Expect({"train": 2, "test": 1})
    ids = {"train": ["ckcu8ty6z00003b5yzfaezbs5", "ckcu8zjbt00013b5y7mxbxycz"], "test": ["zz1"]}
    for split, names in ids.items():
        for k, image_id in enumerate(names):
            data, image = jpeg(800 + k)
            mask = np.zeros((6, 8, 3), np.uint8)
            mask[:, 4:] = 255
            mask[0, 5] = (254, 255, 255)  # not quite 255 in channel 0: not a tool
            images[f"images/{image_id}.jpg"] = data
            masks[f"masks/{image_id}.png"] = encode(mask)
            want = np.zeros((6, 8), np.uint8)
            want[:, 4:] = 1
            want[0, 5] = 0
            expect.labels[(split, f"{image_id}.jpg")] = want
            expect.images[(split, f"{image_id}.jpg")] = image
    root = "kvasir-instrument"
    write_zip(
        manual / "kvasir-instrument.zip",
        {
            f"{root}/images.tar.gz": tar_bytes(images),
            f"{root}/masks.tar.gz": tar_bytes(masks),
            f"{root}/bboxes.json": b"{}",
            f"{root}/train.txt": "\n".join(ids["train"]).encode() + b"\n",
            f"{root}/test.txt": "\n".join(ids["test"]).encode() + b"\n",
        },
    )
    return expect


def make_chase_db1(manual: Path) -> Expect:
    files, expect = {}, Expect({"test": 2})
    names = [f"Image_{i:02d}{side}" for i in range(1, 6) for side in "LR"]  # 10 images
    for k, stem in enumerate(names):
        data, image = jpeg(900 + k)
        vessels = np.zeros((6, 8), bool)
        vessels[k % 6, :] = True
        files[f"{stem}.jpg"] = data
        files[f"{stem}_1stHO.png"] = encode(vessels, mode="1")
        files[f"{stem}_2ndHO.png"] = encode(~vessels, mode="1")
        if k >= 8:  # MESS tests on all but the first 8
            expect.labels[("test", f"{stem}.jpg")] = vessels.astype(np.uint8)
            expect.images[("test", f"{stem}.jpg")] = resaved(image)
    write_zip(manual / "CHASEDB1.zip", files, with_dirs=False)
    return expect


def make_cryonuseg(manual: Path) -> Expect:
    files, expect = {}, Expect({"test": 2})
    annot = "Annotator 1 (biologist second round of manual marks up)"
    for k, stem in enumerate(["Human_AdrenalGland_01", "Human_Larynx_02"]):
        image = rgb_image(1000 + k)
        mask = np.zeros((6, 8), np.uint8)
        mask[2:4, 2:6] = 255
        mask[0, 0] = 128  # partial value: not a nucleus in MESS's /255 truncation
        files[f"tissue images/{stem}.tif"] = encode(image, "TIFF")
        files[f"{annot}/{annot}/mask binary/{stem}.png"] = encode(mask)
        files[f"{annot}/{annot}/label masks modify/{stem}.tif"] = encode(mask, "TIFF")
        files[f"Annotator 2 (bioinformatician)/x/mask binary/{stem}.png"] = encode(mask)
        expect.labels[("test", f"{stem}.png")] = (mask == 255).astype(np.uint8)
        expect.images[("test", f"{stem}.png")] = image
    write_zip(manual / "archive.zip", files)
    return expect


def _white_first_gif(mask: np.ndarray) -> bytes:
    """A GIF of ``mask`` (white where True) whose palette puts white at index 0, black at 1."""
    indices = np.where(mask, 0, 1).astype(np.uint8)
    return encode(indices, "GIF", mode="P", palette=[255, 255, 255, 0, 0, 0])


def make_drive(manual: Path, test_labels: bool = True) -> Expect:
    files, expect = {}, Expect({"train": 2, "test": 1} if test_labels else {"train": 2})
    h, w = 20, 24
    for split, folder, numbers in (("train", "training", (21, 22)), ("test", "test", (1,))):
        for k, n in enumerate(numbers):
            image = rgb_image(1900 + n, h, w)
            vessels = np.zeros((h, w), bool)
            vessels[n % h, :] = True
            vessels[:, 3 + k] = True
            fov = np.full((h, w), 255, np.uint8)
            files[f"DRIVE/{folder}/images/{n:02d}_{folder}.tif"] = encode(image, "TIFF")
            files[f"DRIVE/{folder}/mask/{n:02d}_{folder}_mask.gif"] = encode(fov, "GIF")
            if split == "test" and not test_labels:
                continue
            # One annotation with an inverted palette: the label must follow colours, not indices.
            white = vessels.astype(np.uint8) * 255
            manual_gif = _white_first_gif(vessels) if k == 0 else encode(white, "GIF")
            files[f"DRIVE/{folder}/1st_manual/{n:02d}_manual1.gif"] = manual_gif
            if split == "test":
                files[f"DRIVE/test/2nd_manual/{n:02d}_manual2.gif"] = encode(255 - white, "GIF")
            expect.labels[(split, f"{n:02d}_{folder}.tif")] = vessels.astype(np.uint8)
            expect.images[(split, f"{n:02d}_{folder}.tif")] = image
    write_zip(manual / "DRIVE.zip", files)
    return expect


def make_stare(manual: Path) -> Expect:
    images, labels, expect = {}, {}, Expect({"train": 2})
    h, w = 20, 24
    for k in range(1, 4):  # im0003 has no annotation: not in the train split
        stem = f"im{k:04d}"
        image = rgb_image(2000 + k, h, w)
        images[f"{stem}.ppm.gz"] = gzip.compress(encode(image, "PPM"))
        if k == 3:
            continue
        vessels = np.zeros((h, w), bool)
        vessels[2 * k, :] = True
        vessels[0, 0] = True  # drawn faintly below: any non-black value is a vessel
        if k == 1:  # a colour (P6) annotation
            label = np.where(vessels[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=-1)
            label[0, 0] = (0, 0, 30)
        else:  # a grey (P5) one
            label = np.where(vessels, np.uint8(255), np.uint8(0))
            label[0, 0] = 1
        labels[f"{stem}.ah.ppm.gz"] = gzip.compress(encode(label, "PPM"))
        expect.labels[("train", f"{stem}.ppm.gz")] = vessels.astype(np.uint8)
        expect.images[("train", f"{stem}.ppm.gz")] = image
    manual.mkdir(parents=True, exist_ok=True)
    (manual / "stare-images.tar").write_bytes(tar_bytes(images, compression=""))
    (manual / "labels-ah.tar").write_bytes(tar_bytes(labels, compression=""))
    return expect


def aperio_xml(regions: list[list[tuple[float, float]]]) -> bytes:
    """An Aperio ImageScope annotation file with one ``<Region>`` per list of vertices."""
    body = "".join(
        f'<Region Id="{i}" Type="0" Zoom="1" Length="0" Area="0"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x:f}" Y="{y:f}" Z="0"/>' for x, y in vertices)
        + "</Vertices></Region>"
        for i, vertices in enumerate(regions, 1)
    )
    return (
        '<?xml version="1.0"?><Annotations MicronsPerPixel="0.252100">'
        '<Annotation Id="1" Name="" ReadOnly="0" Type="4" Visible="1"><Attributes>'
        '<Attribute Name="Description" Id="0" Value=""/></Attributes><Regions>'
        '<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>'
        f"</RegionAttributeHeaders>{body}</Regions><Plots/></Annotation></Annotations>"
    ).encode()


def make_monuseg(manual: Path, test: bool = True) -> Expect:
    expect = Expect({"train": 2, "test": 1} if test else {"train": 2})
    h, w = 20, 24
    train_root, train, test_files = "MoNuSeg 2018 Training Data", {}, {}
    ids = {"train": ["TCGA-A7-A13E-01Z-00-DX1", "TCGA-18-5592-01Z-00-DX1"]}
    ids["test"] = ["TCGA-2Z-A9J9-01A-01-TS1"]
    for s, (split, names) in enumerate(ids.items()):
        for k, stem in enumerate(names):
            image = rgb_image(2100 + 10 * s + k, h, w)
            # Two overlapping rectangles (x0, y0, x1, y1; corners included) and a two-point
            # region, which outlines no area.
            boxes = [(2, 3, 9, 7 + k), (8, 6, 20, 16)]
            regions = [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for x0, y0, x1, y1 in boxes]
            regions.append([(1.0, 18.0), (22.0, 18.0)])
            want = np.zeros((h, w), np.uint8)
            for x0, y0, x1, y1 in boxes:
                want[y0 : y1 + 1, x0 : x1 + 1] = 1
            if split == "train":
                train[f"{train_root}/Tissue Images/{stem}.tif"] = encode(image, "TIFF")
                train[f"{train_root}/Annotations/{stem}.xml"] = aperio_xml(regions)
            else:
                test_files[f"MoNuSegTestData/{stem}.tif"] = encode(image, "TIFF")
                test_files[f"MoNuSegTestData/{stem}.xml"] = aperio_xml(regions)
            expect.labels[(split, f"{stem}.tif")] = want
            expect.images[(split, f"{stem}.tif")] = image
    write_zip(manual / f"{train_root}.zip", train)
    if test:
        write_zip(manual / "MoNuSegTestData.zip", test_files)
    else:
        expect.labels = {key: v for key, v in expect.labels.items() if key[0] == "train"}
        expect.images = {key: v for key, v in expect.images.items() if key[0] == "train"}
    return expect


def make_paxray(manual: Path, index: int) -> Expect:
    files, entries = {}, {"train": [], "val": [], "test": []}
    expect = Expect({"train": 2, "val": 1, "test": 1})
    k = 0
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for _ in range(count):
            stem = f"img_{k:04d}"
            grey = rgb_image(1100 + k)[..., 0]
            target = np.zeros((166, 6, 8), bool)
            target[index, k % 6, :] = True
            target[(index + 1) % 166] = True  # overlapping labels of other tasks
            buf = io.BytesIO()
            np.save(buf, target)
            files[f"images/{stem}.png"] = encode(grey)
            files[f"labels/{stem}.npy"] = buf.getvalue()
            entries[split].append({"image": f"images/{stem}.png", "target": f"labels/{stem}.npy"})
            expect.labels[(split, f"{stem}.png")] = target[index].astype(np.uint8)
            expect.images[(split, f"{stem}.png")] = np.repeat(grey[..., None], 3, axis=-1)
            k += 1
    files["paxray.json"] = json.dumps(entries).encode()
    write_zip(manual / "paxray_dataset.zip", files)
    return expect


def make_corrosion_cs(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 3, "test": 2})
    root = "Corrosion Condition State Classification"
    for split, count in (("Train", 3), ("Test", 2)):
        for k in range(count):
            data, image = jpeg(1200 + k)
            label = np.array([[0, 1, 2, 3] * 2] * 6, np.uint8)
            files[f"{root}/original/{split}/images/{k}.jpeg"] = data
            files[f"{root}/original/{split}/masks/{k}.png"] = encode(label)
            files[f"{root}/aug_data/{split}/images/{k}_aug.jpeg"] = data
            expect.labels[(split.lower(), f"{k}.jpeg")] = label
            expect.images[(split.lower(), f"{k}.jpeg")] = image
    write_zip(manual / "31729733", files)  # wget keeps figshare's numeric name
    return expect


def make_deepcrack(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 2, "test": 2})
    for split in ("train", "test"):
        for k in range(2):
            stem = f"11125-{k}"
            data, image = jpeg(1300 + k)
            label = np.zeros((6, 8), np.uint8)
            label[3, :] = 255
            label[4, :] = 254  # MESS's integer /255 maps this to 0
            files[f"{split}_img/{stem}.jpg"] = data
            files[f"{split}_lab/{stem}.png"] = encode(label)
            expect.labels[(split, f"{stem}.jpg")] = (label == 255).astype(np.uint8)
            expect.images[(split, f"{stem}.jpg")] = image
    # The repository's dataset/DeepCrack.zip.
    write_zip(manual / "DeepCrack" / "dataset" / "DeepCrack.zip", files)
    (manual / "DeepCrack" / "README.md").write_text("DeepCrack")
    return expect


def make_pst900(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 2, "test": 1})
    root = "PST900_RGBT_Dataset"
    for split, count in (("train", 2), ("test", 1)):
        for k in range(count):
            stem = f"{32 + k}_bag21_rect_rgb_frame{k:010d}"
            thermal = rgb_image(1400 + k)[..., 1]
            label = np.array([[0, 1, 2, 3, 4, 0, 0, 1]] * 6, np.uint8)
            files[f"{root}/{split}/thermal/{stem}.png"] = encode(thermal)
            files[f"{root}/{split}/rgb/{stem}.png"] = encode(rgb_image(k))
            files[f"{root}/{split}/depth/{stem}.png"] = encode(thermal)
            files[f"{root}/{split}/labels/{stem}.png"] = encode(label)
            expect.labels[(split, f"{stem}.png")] = label
            expect.images[(split, f"{stem}.png")] = np.repeat(thermal[..., None], 3, axis=-1)
    write_zip(manual / "PST900_RGBT_Dataset.zip", files)
    return expect


def make_zerowaste(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 2, "val": 1, "test": 2})
    for split, count in (("train", 2), ("val", 1), ("test", 2)):
        for k in range(count):
            stem = f"01_frame_00{k}000"
            image = rgb_image(1500 + k)
            label = np.array([[0, 1, 2, 3, 4, 0, 1, 2]] * 6, np.uint8)
            files[f"splits_final_deblurred/{split}/data/{stem}.PNG"] = encode(image)
            files[f"splits_final_deblurred/{split}/sem_seg/{stem}.PNG"] = encode(label)
            expect.labels[(split, f"{stem}.PNG")] = label
            expect.images[(split, f"{stem}.PNG")] = image
        files[f"splits_final_deblurred/{split}/labels.json"] = b"{}"
    write_zip(manual / "zerowaste-f-final.zip", files)
    return expect


def make_suim(manual: Path) -> Expect:
    expect = Expect({"train": 2, "test": 1})
    bits = [(0, 0, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255)]
    bits += [(255, 0, 0), (255, 0, 255), (255, 255, 0), (255, 255, 255)]
    for split, folder, count in (("train", "train_val", 2), ("test", "TEST", 1)):
        files = {}
        for k in range(count):
            stem = f"d_r_{k + 1}_"
            data, image = jpeg(1600 + k)
            colour = np.array([bits] * 6, np.uint8)
            want = np.array([list(range(8))] * 6, np.uint8)
            if split == "train":  # an off colour as in some train_val masks: robots
                colour[5, 0], want[5, 0] = (250, 3, 0), 4
            files[f"{folder}/images/{stem}.jpg"] = data
            files[f"{folder}/masks/{stem}.bmp"] = encode(colour, "BMP")
            expect.labels[(split, f"{stem}.jpg")] = want
            expect.images[(split, f"{stem}.jpg")] = image
        write_zip(manual / f"{folder}.zip", files)
    return expect


def make_cub_200(manual: Path) -> Expect:
    images, masks = {}, {}
    expect = Expect({"train": 2, "test": 1})
    entries = [
        (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111", 1),
        (2, "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55", 0),
        (3, "200.Common_Yellowthroat/Common_Yellowthroat_0003_190521", 1),
    ]
    for image_id, rel, is_train in entries:
        data, image = jpeg(1700 + image_id)
        soft = np.array([[0, 51, 102, 128, 153, 204, 255, 255]] * 6, np.uint8)
        images[f"CUB_200_2011/images/{rel}.jpg"] = data
        masks[f"segmentations/{rel}.png"] = encode(soft)
        species = int(rel[:3])
        split = "train" if is_train else "test"
        expect.labels[(split, f"{rel}.jpg")] = ((soft > 128) * species).astype(np.uint8)
        expect.images[(split, f"{rel}.jpg")] = resaved(image)
    images["CUB_200_2011/images.txt"] = "".join(f"{i} {r}.jpg\n" for i, r, _ in entries).encode()
    images["CUB_200_2011/train_test_split.txt"] = "".join(
        f"{i} {t}\n" for i, _, t in entries
    ).encode()
    images["CUB_200_2011/classes.txt"] = b"1 001.Black_footed_Albatross\n"
    images["CUB_200_2011/README"] = b"readme"
    images["attributes.txt"] = b"1 has_bill_shape::curved\n"
    manual.mkdir(parents=True, exist_ok=True)
    (manual / "CUB_200_2011.tgz").write_bytes(tar_bytes(images))
    (manual / "segmentations.tgz").write_bytes(tar_bytes(masks))
    return expect


CWFID_COLOURS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}


def make_cwfid(manual: Path) -> Expect:
    files, expect = {}, Expect({"train": 1, "test": 2})
    for i in (1, 2, 28):  # 28 is in both of the dataset's lists: test only
        image = rgb_image(1800 + i)
        classes = np.array([[0, 1, 2, 0, 1, 2, 0, 0]] * 6)
        colour = colour_label(CWFID_COLOURS, classes)
        colour[0, 0] = (255, 255, 0)  # not in the palette: MESS keeps the red value, 255
        colour[1, 1] = (0, 0, 255)  # likewise 0, ground
        want = classes.astype(np.uint8)
        want[0, 0], want[1, 1] = IGNORE, 0
        files[f"dataset/images/{i:03d}_image.png"] = encode(image)
        files[f"dataset/annotations/{i:03d}_annotation.png"] = encode(colour)
        files[f"dataset/masks/{i:03d}_mask.png"] = encode(classes > 0, mode="1")
        split = "train" if i == 2 else "test"
        expect.labels[(split, f"images/{i:03d}_image.png")] = want
        expect.images[(split, f"images/{i:03d}_image.png")] = image
    files["dataset/train_test_split.yaml"] = b"train: [2]\ntest: [1, 28]\n"
    write_files(manual, files)  # git clone https://github.com/cwfid/dataset.git
    return expect


SMALL_TILE = 4  # tile size used for the tiled datasets in the fast tests


def fakes(tile_size: int = SMALL_TILE) -> dict[str, Callable[[Path], Expect]]:
    """Registry name -> fake maker."""
    makers = {
        "bdd100k": make_bdd100k,
        "dark_zurich": make_dark_zurich,
        "mhp_v1": make_mhp_v1,
        "foodseg103": make_foodseg103,
        "atlantis": make_atlantis,
        "isaid": lambda m: make_isaid(m, tile_size),
        "isprs_potsdam": lambda m: make_isprs_potsdam(m, tile_size),
        "floodnet": lambda m: make_floodnet(m, tile_size),
        "uavid": lambda m: make_uavid(m, tile_size),
        "kvasir_instrument": make_kvasir_instrument,
        "chase_db1": make_chase_db1,
        "cryonuseg": make_cryonuseg,
        "drive": make_drive,
        "stare": make_stare,
        "monuseg": make_monuseg,
        "corrosion_cs": make_corrosion_cs,
        "deepcrack": make_deepcrack,
        "pst900": make_pst900,
        "zerowaste": make_zerowaste,
        "suim": make_suim,
        "cub_200": make_cub_200,
        "cwfid": make_cwfid,
    }
    for target, index in (("lungs", 0), ("mediastinum", 10), ("bones", 24), ("diaphragm", 163)):
        makers[f"paxray_{target}"] = lambda m, index=index: make_paxray(m, index)
    return makers
