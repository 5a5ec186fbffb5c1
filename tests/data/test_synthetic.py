"""Tests of the procedurally generated multi-domain segmentation dataset."""

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from mopeft_jax.data import synthetic
from mopeft_jax.data.registry import DatasetInfo
from mopeft_jax.data.synthetic import (
    DOMAINS,
    IGNORE_LABEL,
    SOURCE_DOMAIN,
    TARGET_DOMAINS,
    SyntheticSegmentation,
    make_example,
)

ALL_DOMAINS = tuple(DOMAINS)
STAT_SIZE = 96
STAT_N = 24


def _digest(example):
    return hashlib.sha256(example["image"].tobytes() + example["label"].tobytes()).hexdigest()


# ----------------------------------------------------------------------------- metadata


def test_domain_metadata():
    assert SOURCE_DOMAIN == "source" and SOURCE_DOMAIN in DOMAINS
    assert len(TARGET_DOMAINS) >= 3
    assert set(TARGET_DOMAINS) | {SOURCE_DOMAIN} == set(DOMAINS)
    assert SOURCE_DOMAIN not in TARGET_DOMAINS
    for name, spec in DOMAINS.items():
        assert isinstance(spec, DatasetInfo)
        assert spec.domain == synthetic.DOMAIN
        assert spec.name == name
        assert 3 <= spec.num_classes <= 5
        assert spec.num_classes == len(spec.class_names) == len(set(spec.class_names))
        assert 0 <= spec.background_class < spec.num_classes
        assert spec.class_names[spec.background_class] == "background"
        assert spec.ignore_label == IGNORE_LABEL == 255
        assert spec.description
    spec = DOMAINS[SOURCE_DOMAIN]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(TypeError):
        DOMAINS["new"] = spec  # read-only mapping
    # Class meanings may differ across domains.
    assert DOMAINS["shape_shift"].class_names != DOMAINS["source"].class_names


# ----------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("domain", ALL_DOMAINS)
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (100, 72)])
def test_shapes_dtypes_and_label_values(domain, size):
    spec = DOMAINS[domain]
    allowed = set(range(spec.num_classes)) | {spec.ignore_label}
    for index in range(3):
        ex = make_example(domain, index, image_size=size)
        assert set(ex) == {"image", "label", "domain", "index"}
        assert ex["domain"] == domain and ex["index"] == index
        assert ex["image"].shape == (*size, 3) and ex["image"].dtype == np.uint8
        assert ex["label"].shape == size and ex["label"].dtype == np.uint8
        assert ex["image"].flags.c_contiguous and ex["label"].flags.c_contiguous
        assert set(np.unique(ex["label"]).tolist()) <= allowed
        assert (ex["label"] == spec.background_class).any()
        assert (ex["label"] != spec.background_class).any()  # at least one object
        assert ex["image"].std() > 3.0  # not a blank image


def test_int_image_size_means_square():
    ex = make_example("source", 0, image_size=40)
    assert ex["image"].shape == (40, 40, 3) and ex["label"].shape == (40, 40)
    square = make_example("source", 0, image_size=(40, 40))
    np.testing.assert_array_equal(ex["label"], square["label"])
    np.testing.assert_array_equal(ex["image"], square["image"])


def test_scene_is_independent_of_image_size():
    """The layout is drawn in relative coordinates: a 2x render is the same scene."""
    for domain in ALL_DOMAINS:
        for index in range(4):
            small = make_example(domain, index, image_size=(48, 64))["label"]
            big = make_example(domain, index, image_size=(96, 128))["label"]
            assert (small == big[::2, ::2]).mean() > 0.9, (domain, index)


@pytest.mark.parametrize("domain", ALL_DOMAINS)
def test_every_class_appears(domain):
    spec = DOMAINS[domain]
    labels = np.stack([make_example(domain, i, image_size=64)["label"] for i in range(16)])
    present = set(np.unique(labels).tolist()) - {spec.ignore_label}
    assert present == set(range(spec.num_classes))


def test_ignore_band():
    # No ignore pixels in the source domain; a thin band around borders in noise_shift.
    for i in range(8):
        assert not (make_example("source", i, image_size=64)["label"] == 255).any()
    labels = np.stack([make_example("noise_shift", i, image_size=128)["label"] for i in range(8)])
    ignored = labels == 255
    assert 0.005 < ignored.mean() < 0.2
    # The band is thin: every ignored pixel is within 3 px of a non-ignored object/background
    # pixel, i.e. eroding the ignored set by 3 px removes it entirely.
    for ign in ignored:
        assert not ndimage.binary_erosion(ign, iterations=3).any()


# ----------------------------------------------------------------------------- determinism


def test_determinism_same_arguments():
    for domain in ALL_DOMAINS:
        a = make_example(domain, 7, split="val", image_size=(40, 56), seed=3)
        b = make_example(domain, 7, split="val", image_size=(40, 56), seed=3)
        assert a["image"].tobytes() == b["image"].tobytes()
        assert a["label"].tobytes() == b["label"].tobytes()


def test_determinism_across_processes_and_numpy_only():
    """Seeds come from a stable hash, not Python's per-process salted ``hash()``; the module
    (loaded on its own, without the package) imports no jax, torch or tensorflow."""
    code = (
        "import hashlib, importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('synth', sys.argv[1])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['synth'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "e = mod.make_example('texture_shift', 5, split='val', image_size=(32, 48), seed=2)\n"
        "print(hashlib.sha256(e['image'].tobytes() + e['label'].tobytes()).hexdigest())\n"
        "print(sorted(m for m in ('jax', 'torch', 'tensorflow', 'grain') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code, synthetic.__file__],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    digest, heavy = out.stdout.split("\n")[:2]
    expected = _digest(make_example("texture_shift", 5, split="val", image_size=(32, 48), seed=2))
    assert digest == expected
    assert heavy == "[]"


def test_different_arguments_give_different_examples():
    base = dict(split="train", image_size=48, seed=0)
    ref = _digest(make_example("source", 0, **base))
    assert _digest(make_example("source", 1, **base)) != ref
    assert _digest(make_example("source", 0, **{**base, "seed": 1})) != ref
    assert _digest(make_example("source", 0, **{**base, "split": "val"})) != ref
    for domain in TARGET_DOMAINS:
        assert _digest(make_example(domain, 0, **base)) != ref
    # Images differ, not only labels.
    a = make_example("source", 0, **base)["image"]
    b = make_example("source", 0, **{**base, "seed": 1})["image"]
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_splits_are_disjoint():
    for domain in (SOURCE_DOMAIN, "shape_shift"):
        train = {_digest(make_example(domain, i, split="train", image_size=32)) for i in range(40)}
        val = {_digest(make_example(domain, i, split="val", image_size=32)) for i in range(40)}
        test = {_digest(make_example(domain, i, split="test", image_size=32)) for i in range(40)}
        assert len(train) == len(val) == len(test) == 40  # no duplicates within a split
        assert not train & val and not train & test and not val & test


def test_invalid_arguments():
    with pytest.raises(KeyError):
        make_example("no_such_domain", 0)
    with pytest.raises(ValueError):
        make_example("source", -1)
    with pytest.raises(ValueError):
        make_example("source", 0, seed=-1)
    with pytest.raises(TypeError):
        make_example("source", 1.5)
    with pytest.raises(ValueError):
        make_example("source", 0, image_size=(4, 64))
    with pytest.raises(ValueError):
        make_example("source", 0, split="")


# ----------------------------------------------------------------------------- domain shifts


def _sample(domain, seed):
    exs = [make_example(domain, i, image_size=STAT_SIZE, seed=seed) for i in range(STAT_N)]
    img = np.stack([e["image"] for e in exs]).astype(np.float64)
    lab = np.stack([e["label"] for e in exs])
    return img, lab


def _chroma(img):
    """(..., 2) chroma vector: the RGB colour projected on the plane orthogonal to grey."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return np.stack([r - (g + b) / 2, (np.sqrt(3) / 2) * (g - b)], axis=-1)


def _class_hues(img, lab, num_classes):
    """Hue angle (radians) of each object class's mean chroma, index 0 unused."""
    hues = np.zeros(num_classes)
    for c in range(1, num_classes):
        v = _chroma(img[lab == c]).mean(axis=0)
        hues[c] = np.arctan2(v[1], v[0])
    return hues


def _hue_match(img, lab, ref_hues):
    """Per object class, the fraction of its chromatic pixels within 45 degrees of ``ref_hues``."""
    out = []
    for c in range(1, len(ref_hues)):
        x = _chroma(img[lab == c])
        x = x[np.linalg.norm(x, axis=1) > 20]
        diff = np.arctan2(x[:, 1], x[:, 0]) - ref_hues[c]
        diff = np.abs((diff + np.pi) % (2 * np.pi) - np.pi)
        out.append((diff < np.radians(45)).mean())
    return np.array(out)


def _stats(domain, ref_hues, seed=0):
    """Measured statistics of a sample of one domain."""
    spec = DOMAINS[domain]
    img, lab = _sample(domain, seed)
    k = spec.num_classes
    grey = img.mean(axis=-1)
    laplacian = np.abs(
        4 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    ).mean()
    contrast, sizes = [], []
    for im, lb in zip(img, lab):
        bg = im[lb == spec.background_class].mean(axis=0)
        for c in range(1, k):
            if (lb == c).sum() > 20:
                contrast.append(np.linalg.norm(im[lb == c].mean(axis=0) - bg))
            segments, n = ndimage.label(lb == c)
            sizes.extend(np.bincount(segments.ravel())[1:].tolist())
    return {
        "hue_match": _hue_match(img, lab, ref_hues),  # vs the source's class hues
        "brightness": img.mean(),
        "hf_energy": laplacian,  # mean |Laplacian| of the grey image
        "contrast": float(np.mean(contrast)),  # object vs background mean-colour distance
        "ignored": (lab == 255).mean(),
        "median_segment": float(np.median(sizes)),
        "segments_per_image": len(sizes) / STAT_N,
    }


@pytest.fixture(scope="module")
def stats():
    # Reference class hues from a source sample that the compared samples do not contain.
    img, lab = _sample(SOURCE_DOMAIN, seed=2)
    ref_hues = _class_hues(img, lab, DOMAINS[SOURCE_DOMAIN].num_classes)
    out = {d: _stats(d, ref_hues) for d in ALL_DOMAINS}
    out["source_seed1"] = _stats(SOURCE_DOMAIN, ref_hues, seed=1)
    return out


def _ratio(stats, key, domain):
    return stats[domain][key] / stats[SOURCE_DOMAIN][key]


def test_source_statistics_are_stable_across_seeds(stats):
    """The control: another sample of the source domain matches within the margins below."""
    for key in ("brightness", "hf_energy", "contrast", "median_segment", "segments_per_image"):
        assert 0.75 < _ratio(stats, key, "source_seed1") < 1.33, key
    # Source objects keep their class's hue (measured: 100% of chromatic pixels).
    assert stats["source"]["hue_match"].min() > 0.9
    assert stats["source_seed1"]["hue_match"].min() > 0.9


def test_color_shift_changes_class_colours(stats):
    # Hues are rotated by 90-270 degrees: almost no object pixel keeps its class's source hue
    # (measured: 0%).
    assert stats["color_shift"]["hue_match"].max() < 0.1
    # Geometry is untouched.
    assert 0.75 < _ratio(stats, "median_segment", "color_shift") < 1.33


def test_texture_shift_changes_textures_and_contrast(stats):
    assert _ratio(stats, "hf_energy", "texture_shift") > 4.0  # measured ~12x
    assert _ratio(stats, "contrast", "texture_shift") < 0.6  # measured ~0.45
    assert stats["texture_shift"]["hue_match"].mean() < 0.5  # random hues, measured ~0.24
    assert 0.75 < _ratio(stats, "median_segment", "texture_shift") < 1.33


def test_noise_shift_darkens_and_adds_noise(stats):
    assert _ratio(stats, "brightness", "noise_shift") < 0.5  # low light, measured ~0.3
    assert _ratio(stats, "hf_energy", "noise_shift") > 1.5  # sensor noise, measured ~2.5x
    assert stats["noise_shift"]["ignored"] > 0.01 and stats["source"]["ignored"] == 0.0
    assert stats["noise_shift"]["hue_match"].min() > 0.8  # colours kept, measured ~0.96


def test_shape_shift_changes_object_statistics(stats):
    assert _ratio(stats, "median_segment", "shape_shift") < 0.3  # measured ~0.12
    assert _ratio(stats, "segments_per_image", "shape_shift") > 2.0  # measured ~4x
    # Appearance is close to source.
    assert stats["shape_shift"]["hue_match"].min() > 0.9
    assert 0.75 < _ratio(stats, "brightness", "shape_shift") < 1.33


# ----------------------------------------------------------------------------- data source


def test_random_access_source():
    src = SyntheticSegmentation(
        "color_shift", split="val", num_examples=10, image_size=(32, 48), seed=4
    )
    assert len(src) == 10
    assert src.spec is DOMAINS["color_shift"]
    ex = src[3]
    ref = make_example("color_shift", 3, split="val", image_size=(32, 48), seed=4)
    assert ex["image"].tobytes() == ref["image"].tobytes()
    assert ex["label"].tobytes() == ref["label"].tobytes()
    assert src[np.int64(3)]["index"] == 3
    assert src[-1]["index"] == 9
    with pytest.raises(IndexError):
        src[10]
    with pytest.raises(IndexError):
        src[-11]
    clone = pickle.loads(pickle.dumps(src))  # grain workers pickle the source
    assert _digest(clone[5]) == _digest(src[5])
    assert "color_shift" in repr(src)
    with pytest.raises(KeyError):
        SyntheticSegmentation("nope")


def test_grain_map_dataset():
    grain = pytest.importorskip("grain")
    map_dataset = getattr(grain, "MapDataset", None)
    if map_dataset is None:  # older grain versions
        map_dataset = pytest.importorskip("grain.python").MapDataset
    src = SyntheticSegmentation("source", num_examples=6, image_size=32)
    ds = map_dataset.source(src)
    assert len(ds) == 6
    assert _digest(ds[2]) == _digest(src[2])
    shuffled = ds.shuffle(seed=0).map(lambda ex: ex["index"])
    assert sorted(shuffled[i] for i in range(len(shuffled))) == list(range(6))
    batch = next(
        iter(
            ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
            .batch(3)
            .to_iter_dataset()
        )
    )
    assert batch["image"].shape == (3, 32, 32, 3) and batch["label"].shape == (3, 32, 32)


def test_grain_data_loader():
    gp = pytest.importorskip("grain.python")
    src = SyntheticSegmentation("noise_shift", num_examples=5, image_size=24)
    sampler = gp.IndexSampler(
        len(src), shard_options=gp.NoSharding(), shuffle=False, num_epochs=1, seed=0
    )
    loader = gp.DataLoader(data_source=src, sampler=sampler, worker_count=0)
    indices = [ex["index"] for ex in loader]
    assert indices == list(range(5))


# ----------------------------------------------------------------------------- speed
