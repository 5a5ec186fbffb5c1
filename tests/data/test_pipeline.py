"""Tests of the grain input pipeline: SAM's pre-processing, sampled prompts, batching, resume."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mopeft_jax.data.pipeline import (
    PipelineConfig,
    downsample_mask,
    make_dataset,
    preprocess_example,
)
from mopeft_jax.data.synthetic import SyntheticSegmentation
from mopeft_jax.sam.config import PIXEL_MEAN, PIXEL_STD, SamConfig
from mopeft_jax.segments import (
    connected_segments,
    interior_candidates,
    segment_prompts,
)

S, L = 128, 32
CELL = S // L
KEYS = ("image", "boxes", "points", "masks", "valid", "classes")


def config(**kwargs):
    defaults = dict(image_size=S, low_res_size=L, max_prompts=16, prompt_kind="both")
    defaults.update(kwargs)
    return PipelineConfig(**defaults)


def rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- independent oracles


def pil_size(h, w, target=S):
    """The resized size, computed here from SAM's rule rather than imported."""
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def pil_image(image, target=S):
    """SAM's ResizeLongestSide.apply_image with PIL, then normalise and pad."""
    h, w = image.shape[:2]
    nh, nw = pil_size(h, w, target)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
    norm = (resized - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    out = np.zeros((target, target, 3), np.float32)
    out[:nh, :nw] = norm
    return out


def pil_label(label, target=S):
    """Nearest resize of a uint8 label with PIL (what detectron2 does for MESS)."""
    h, w = label.shape
    nh, nw = pil_size(h, w, target)
    return np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))


def reference_segments(label, min_pixels=10, ignore=255):
    """{(class, (x0, y0, x1, y1)): (S, S) bool mask in the padded frame} by scipy directly."""
    out = {}
    for c in np.unique(label):
        if c == ignore:
            continue
        comps, n = ndimage.label(label == c)  # scipy's default structure is the 4-cross
        for k in range(1, n + 1):
            mask = comps == k
            if mask.sum() < min_pixels:
                continue
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            full = np.zeros((S, S), bool)
            full[: label.shape[0], : label.shape[1]] = mask
            out[(int(c), box)] = full
    return out


def reference_low_res(full):
    """Area-average over CELL x CELL blocks, >= 0.5; the max-coverage cells if none is."""
    cover = full.reshape(L, CELL, L, CELL).mean(axis=(1, 3))
    low = cover >= 0.5
    if not low.any():
        low = cover == cover.max()
    return low.astype(np.float32)


def synthetic(domain="source", index=0, size=(96, 80), split="train"):
    return SyntheticSegmentation(domain, split=split, num_examples=64, image_size=size)[index]


def index_source(n, size=(24, 20)):
    """Examples whose image is the constant value of their index, and two label segments."""
    examples = []
    for i in range(n):
        label = np.zeros(size, np.uint8)
        label[: size[0] // 2] = 1
        examples.append({"image": np.full(size + (3,), i, np.uint8), "label": label})
    return examples


def indices_of(batch):
    """The source index of every element of a batch of index_source examples."""
    pixel = batch["image"][:, 0, 0, 0] * np.float32(PIXEL_STD[0]) + np.float32(PIXEL_MEAN[0])
    return [int(v) for v in np.rint(pixel)]


def digest(batches):
    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            h.update(key.encode() + np.ascontiguousarray(batch[key]).tobytes())
    return h.hexdigest()


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


# ----------------------------------------------------------------------------- config


def test_config_defaults():
    c = PipelineConfig()
    assert (c.image_size, c.low_res_size, c.max_prompts, c.prompt_kind) == (1024, 256, 16, "box")
    assert (c.min_pixels, c.ignore_label, c.batch_size, c.seed) == (10, 255, 2, 0)
    assert c.shuffle and c.num_epochs is None and c.drop_remainder and c.worker_count == 0
    assert c.pixel_mean == PIXEL_MEAN and c.pixel_std == PIXEL_STD
    # The default low resolution is SAM's decoder output: 4 x image_size / patch.
    assert c.low_res_size == SamConfig().low_res_mask_size
    hash(PipelineConfig(pixel_mean=[1, 2, 3]))  # lists are stored as tuples


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=12.0), "image_size"),
        (dict(low_res_size=-1), "low_res_size"),
        (dict(image_size=100, low_res_size=32), "must divide"),
        (dict(max_prompts=0), "max_prompts"),
        (dict(prompt_kind="mask"), "prompt_kind"),
        (dict(min_pixels=-1), "min_pixels"),
        (dict(ignore_label="255"), "ignore_label"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(seed=-3), "seed"),
        (dict(num_epochs=0), "num_epochs"),
        (dict(worker_count=-1), "worker_count"),
        (dict(shuffle="yes"), "shuffle"),
        (dict(pixel_mean=(1.0, 2.0)), "pixel_mean"),
        (dict(pixel_std=(1.0, 0.0, 1.0)), "pixel_std"),
        (dict(pixel_std="abc"), "pixel_std"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig(**kwargs)


# ----------------------------------------------------------------------------- image


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (300, 211), (128, 128), (5, 3), (640, 96)])
def test_image_equals_pil_bilinear_normalised_and_padded(shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    label = np.zeros(shape, np.uint8)
    out = preprocess_example({"image": image, "label": label}, config(), rng())
    assert out["image"].dtype == np.float32 and out["image"].shape == (S, S, 3)
    np.testing.assert_array_equal(out["image"], pil_image(image))
    nh, nw = pil_size(*shape)
    assert max(nh, nw) == S
    assert not out["image"][nh:].any() and not out["image"][:, nw:].any()


def test_normalisation_and_padding_values():
    image = np.full((50, 100, 3), (200, 10, 128), np.uint8)
    out = preprocess_example(
        {"image": image, "label": np.zeros((50, 100), np.uint8)}, config(), rng()
    )
    expected = np.array(
        [(200 - 123.675) / 58.395, (10 - 116.28) / 57.12, (128 - 103.53) / 57.375], np.float32
    )
    np.testing.assert_allclose(
        out["image"][:64], np.broadcast_to(expected, (64, 128, 3)), rtol=1e-6
    )
    np.testing.assert_array_equal(out["image"][64:], 0.0)
    # Custom statistics are used.
    c = config(pixel_mean=(0, 0, 0), pixel_std=(255, 255, 255))
    out = preprocess_example({"image": image, "label": np.zeros((50, 100), np.uint8)}, c, rng())
    np.testing.assert_allclose(out["image"][0, 0], np.array([200, 10, 128]) / 255, rtol=1e-6)


def test_grayscale_and_rgba_are_converted():
    rgb = synthetic()["image"]
    label = synthetic()["label"]
    gray = rgb[..., 1]
    expected_gray = pil_image(np.repeat(gray[..., None], 3, axis=-1))
    for image in (gray, gray[..., None]):
        out = preprocess_example({"image": image, "label": label}, config(), rng())
        np.testing.assert_array_equal(out["image"], expected_gray)
    # PIL's own grayscale -> RGB conversion agrees.
    via_pil = np.asarray(Image.fromarray(gray).convert("RGB"))
    np.testing.assert_array_equal(pil_image(via_pil), expected_gray)

    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=-1)
    out = preprocess_example({"image": rgba, "label": label}, config(), rng())
    np.testing.assert_array_equal(out["image"], pil_image(rgb))
    # Integer images that fit in uint8 are accepted unchanged.
    out = preprocess_example({"image": rgb.astype(np.int64), "label": label}, config(), rng())
    np.testing.assert_array_equal(out["image"], pil_image(rgb))


# ----------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    "domain, size", [("source", (96, 80)), ("noise_shift", (70, 128)), ("source", (200, 260))]
)
def test_prompts_and_masks_equal_independent_computation(domain, size):
    example = synthetic(domain, 3, size)
    c = config(max_prompts=64)
    out = preprocess_example(example, c, rng(5))
    label = pil_label(example["label"])
    ref = reference_segments(label)
    n = int(out["valid"].sum())
    assert 0 < n == len(ref) <= 64
    assert out["valid"][:n].all() and not out["valid"][n:].any()

    found = set()
    sizes = []
    for i in range(n):
        key = (int(out["classes"][i]), tuple(int(v) for v in out["boxes"][i]))
        assert key in ref, key
        found.add(key)
        full = ref[key]
        sizes.append(int(full.sum()))
        x, y = out["points"][i]
        assert x == int(x) and y == int(y)
        assert full[int(y), int(x)], "the point must lie inside its segment"
        # ... and among the interior candidates (distance > max / 1.7).
        assert [int(y), int(x)] in interior_candidates(full).tolist()
        np.testing.assert_array_equal(out["masks"][i], reference_low_res(full))
    assert found == set(ref)
    assert sizes == sorted(sizes, reverse=True)
    # The boxes are those of the shared evaluation rule, at the resized scale.
    boxes, classes = segment_prompts(label, "box", max_prompts=None)
    np.testing.assert_array_equal(out["boxes"][:n], boxes)
    np.testing.assert_array_equal(out["classes"][:n], classes)
    # The background (class 0) is a segment like any other.
    assert 0 in out["classes"][:n]
    # Padding prompts.
    assert not out["boxes"][n:].any() and not out["points"][n:].any()
    assert not out["masks"][n:].any() and (out["classes"][n:] == -1).all()


def test_output_dtypes_and_kind_selection():
    example = synthetic()
    for kind in ("box", "point", "both"):
        out = preprocess_example(example, config(prompt_kind=kind, max_prompts=5), rng())
        assert set(out) == set(KEYS)
        assert out["boxes"].shape == (5, 4) and out["boxes"].dtype == np.float32
        assert out["points"].shape == (5, 2) and out["points"].dtype == np.float32
        assert out["masks"].shape == (5, L, L) and out["masks"].dtype == np.float32
        assert out["valid"].shape == (5,) and out["valid"].dtype == bool
        assert out["classes"].shape == (5,) and out["classes"].dtype == np.int32
        assert set(np.unique(out["masks"])) <= {0.0, 1.0}
        n = int(out["valid"].sum())
        assert out["boxes"][:n].any() == (kind != "point")
        assert out["points"][:n].any() == (kind != "box")
        # Every valid prompt has a non-empty target.
        assert (out["masks"][:n].sum(axis=(1, 2)) > 0).all()


def test_more_segments_than_p_gives_a_random_subset():
    example = synthetic("shape_shift", 1, (128, 128))
    label = pil_label(example["label"])
    ref = reference_segments(label)
    assert len(ref) > 6
    subsets = set()
    for seed in range(8):
        out = preprocess_example(example, config(max_prompts=6), rng(seed))
        assert out["valid"].all()
        keys = [(int(c), tuple(int(v) for v in b)) for c, b in zip(out["classes"], out["boxes"])]
        assert set(keys) <= set(ref) and len(set(keys)) == 6
        sizes = [int(ref[k].sum()) for k in keys]
        assert sizes == sorted(sizes, reverse=True)
        subsets.add(tuple(keys))
    assert len(subsets) > 1, "the subset must be random, not always the largest segments"
    # The same generator state gives the same prompts.
    a = preprocess_example(example, config(max_prompts=6), rng(3))
    b = preprocess_example(example, config(max_prompts=6), rng(3))
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "label",
    [
        np.full((40, 30), 255, np.uint8),  # all ignore
        np.indices((40, 30)).sum(axis=0).astype(np.uint8) % 2,  # checkerboard: 1-pixel segments
    ],
    ids=["all_ignore", "only_tiny_segments"],
)
def test_no_segment_gives_all_invalid_prompts(label):
    image = np.zeros(label.shape + (3,), np.uint8)
    # The checkerboard is resized 128/40 = 3.2x, so its cells stay smaller than 10 pixels.
    out = preprocess_example({"image": image, "label": label}, config(min_pixels=20), rng())
    assert not out["valid"].any()
    assert (out["classes"] == -1).all()
    assert not out["boxes"].any() and not out["points"].any() and not out["masks"].any()


def test_ignore_label_and_min_pixels_are_configurable():
    label = np.zeros((32, 32), np.uint8)
    label[:, 16:] = 255
    example = {"image": np.zeros((32, 32, 3), np.uint8), "label": label}
    out = preprocess_example(example, config(), rng())
    assert out["classes"].tolist()[:2] == [0, -1]
    out = preprocess_example(example, config(ignore_label=None), rng())
    assert sorted(out["classes"][out["valid"]].tolist()) == [0, 255]
    out = preprocess_example(example, config(min_pixels=S * S), rng())
    assert not out["valid"].any()


def test_thin_segment_keeps_its_max_coverage_cells():
    label = np.zeros((S, S), np.uint8)
    label[8:48, 5] = 1  # one pixel wide: a quarter of each 4x4 cell it crosses
    label[100, 100:112] = 2
    example = {"image": np.zeros((S, S, 3), np.uint8), "label": label}
    out = preprocess_example(example, config(), rng())
    by_class = {int(c): out["masks"][i] for i, c in enumerate(out["classes"]) if c >= 0}
    expected = np.zeros((L, L), np.float32)
    expected[2:12, 1] = 1
    np.testing.assert_array_equal(by_class[1], expected)
    expected = np.zeros((L, L), np.float32)
    expected[25, 25:28] = 1
    np.testing.assert_array_equal(by_class[2], expected)
    # A half-covered cell counts as foreground (coverage >= 0.5).
    label = np.zeros((S, S), np.uint8)
    label[0:2, 0:8] = 1
    seg = [s for s in connected_segments(label, min_pixels=1) if s.class_id == 1][0]
    low = downsample_mask(seg, config())
    assert low[0, :2].all() and low.sum() == 2


def test_tiny_and_large_images():
    tiny = {"image": np.full((3, 5, 3), 7, np.uint8), "label": np.ones((3, 5), np.uint8)}
    out = preprocess_example(tiny, config(), rng())
    assert out["valid"].sum() == 1 and out["classes"][0] == 1
    nh, nw = pil_size(3, 5)
    np.testing.assert_array_equal(out["boxes"][0], [0, 0, nw, nh])
    np.testing.assert_array_equal(out["image"], pil_image(tiny["image"]))
    large = synthetic("source", 2, (700, 1000))
    out = preprocess_example(large, config(max_prompts=64), rng())
    np.testing.assert_array_equal(out["image"], pil_image(large["image"]))
    assert out["valid"].sum() == len(reference_segments(pil_label(large["label"])))


@pytest.mark.parametrize(
    "example, match",
    [
        (
            {"image": np.zeros((4, 4, 4, 3), np.uint8), "label": np.zeros((4, 4), np.uint8)},
            r"\(4, 4, 4, 3\)",
        ),
        (
            {"image": np.zeros((4, 4, 2), np.uint8), "label": np.zeros((4, 4), np.uint8)},
            r"\(4, 4, 2\)",
        ),
        ({"image": np.zeros((0, 4, 3), np.uint8), "label": np.zeros((0, 4), np.uint8)}, "empty"),
        (
            {"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((4, 4, 2), np.uint8)},
            r"\(4, 4, 2\)",
        ),
        (
            {"image": np.zeros((4, 6, 3), np.uint8), "label": np.zeros((6, 4), np.uint8)},
            r"\(6, 4\).*\(4, 6, 3\)",
        ),
        (
            {"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((4, 4), np.float32)},
            "integer",
        ),
        ({"image": np.full((4, 4, 3), 0.5), "label": np.zeros((4, 4), np.uint8)}, r"\[0, 255\]"),
        ({"image": np.full((4, 4, 3), 300), "label": np.zeros((4, 4), np.uint8)}, r"\[0, 255\]"),
        (
            {"image": np.zeros((1, 1000, 3), np.uint8), "label": np.zeros((1, 1000), np.uint8)},
            "elongated",
        ),
        ({"label": np.zeros((4, 4), np.uint8)}, "image"),
    ],
)
def test_preprocess_errors(example, match):
    with pytest.raises(ValueError, match=match):
        preprocess_example(example, config(), rng())


# ----------------------------------------------------------------------------- dataset


def test_batches_match_the_train_step_format():
    sam = SamConfig(image_size=S, patch_size=16)
    c = config(low_res_size=sam.low_res_mask_size, batch_size=3, max_prompts=8)
    ds = make_dataset(SyntheticSegmentation("source", num_examples=8, image_size=(96, 80)), c)
    batch = next(iter(ds))
    expected = {
        "image": ((3, S, S, 3), np.float32),
        "boxes": ((3, 8, 4), np.float32),
        "points": ((3, 8, 2), np.float32),
        "masks": ((3, 8, sam.low_res_mask_size, sam.low_res_mask_size), np.float32),
        "valid": ((3, 8), np.bool_),
        "classes": ((3, 8), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    # The keys the train step's module docstring documents are all there.
    from mopeft_jax.train import step

    for key in ("image", "boxes", "points", "masks", "valid"):
        assert f"\n  {key} " in step.__doc__, key


def test_deterministic_and_state_resumes_the_exact_stream():
    # 7 examples, 2 per batch: the 5 batches cross an epoch boundary (a reshuffle).
    source = SyntheticSegmentation("shape_shift", num_examples=7, image_size=(48, 40))
    c = config(batch_size=2, seed=11, max_prompts=4, image_size=64, low_res_size=16)
    first = take(iter(make_dataset(source, c)), 5)
    again = take(iter(make_dataset(source, c)), 5)
    assert digest(first) == digest(again)
    # A different seed gives a different stream.
    other = dataclasses.replace(c, seed=12)
    assert digest(take(iter(make_dataset(source, other)), 1)) != digest(first[:1])

    it = iter(make_dataset(source, c))
    take(it, 3)
    state = it.get_state()
    json.dumps(state)  # checkpointable as plain JSON
    rest = take(it, 2)
    resumed = iter(make_dataset(source, c))
    resumed.set_state(state)
    after = take(resumed, 2)
    for a, b in zip(rest, after):
        for key in KEYS:
            assert a[key].tobytes() == b[key].tobytes()
    assert digest(after) == digest(first[3:5])


def test_shuffled_epochs_and_repeat():
    source = index_source(6)
    c = config(batch_size=1, num_epochs=3, drop_remainder=False)
    order = [i for batch in make_dataset(source, c) for i in indices_of(batch)]
    assert len(order) == 18
    epochs = [order[0:6], order[6:12], order[12:18]]
    assert all(sorted(e) == list(range(6)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1, "each epoch must be reshuffled"
    assert epochs[0] != list(range(6))
    # Without shuffling the order is the source's.
    c = config(batch_size=4, num_epochs=1, shuffle=False, drop_remainder=False)
    batches = list(make_dataset(source, c))
    assert [indices_of(b) for b in batches] == [[0, 1, 2, 3], [4, 5]]
    c = config(batch_size=4, num_epochs=1, shuffle=False, drop_remainder=True)
    assert [indices_of(b) for b in make_dataset(source, c)] == [[0, 1, 2, 3]]


def test_each_epoch_draws_new_prompts_for_the_same_image():
    source = [synthetic("shape_shift", 0, (96, 96))]
    c = config(batch_size=1, num_epochs=4, max_prompts=4, prompt_kind="point")
    batches = list(make_dataset(source, c))
    assert len({b["points"].tobytes() for b in batches}) > 1


def test_shards_are_disjoint_and_cover_the_source():
    source = index_source(7)
    c = config(batch_size=1, num_epochs=1, drop_remainder=False)
    shards = [
        [i for b in make_dataset(source, c, shard_index=k, shard_count=2) for i in indices_of(b)]
        for k in range(2)
    ]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(7))
    assert sorted(len(s) for s in shards) == [3, 4]
    # The default is this process's shard: one process, everything.
    everything = [i for b in make_dataset(source, c) for i in indices_of(b)]
    assert sorted(everything) == list(range(7))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shard_index=0), "both"),
        (dict(shard_count=2), "both"),
        (dict(shard_index=2, shard_count=2), "shard_index"),
        (dict(shard_index=-1, shard_count=2), "shard_index"),
        (dict(shard_index=0, shard_count=0), "shard_count"),
        (dict(shard_index=1, shard_count=3), "empty"),
    ],
)
def test_make_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(index_source(1), config(), **kwargs)


def test_make_dataset_rejects_bad_sources_and_configs():
    with pytest.raises(ValueError, match="empty"):
        make_dataset([], config())
    with pytest.raises(ValueError, match="random-access"):
        make_dataset(iter(index_source(2)), config())
    with pytest.raises(ValueError, match="PipelineConfig"):
        make_dataset(index_source(2), {"batch_size": 2})


def test_worker_processes_give_the_same_stream_and_resume():
    # The worker is a fresh (spawned) interpreter that runs the whole pipeline, so this is also
    # the check that the stream is the same across runs/processes.
    source = SyntheticSegmentation("source", num_examples=6, image_size=(48, 64))
    kwargs = dict(batch_size=2, max_prompts=4, image_size=64, low_res_size=16)
    reference = take(iter(make_dataset(source, config(**kwargs))), 4)
    workers = config(worker_count=1, **kwargs)
    it = iter(make_dataset(source, workers))
    got = take(it, 2)
    state = it.get_state()
    got += take(it, 2)
    it.close()
    assert digest(got) == digest(reference)
    resumed = iter(make_dataset(source, workers))
    resumed.set_state(state)
    assert digest(take(resumed, 2)) == digest(reference[2:])
    resumed.close()
