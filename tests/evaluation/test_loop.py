"""The MESS evaluation loop (mopeft_jax.evaluation.loop).

Most tests replace `Sam.decode` by a stand-in whose masks are known, so that the result of the
whole pipeline (image and label resizing, oracle prompts, chunked decoding, choice of the first
multimask output, upscaling to the original label size, semantic map, background rule, dataset
confusion matrix) can be predicted exactly. The stand-ins draw their masks at the decoder's
low-res resolution; with patch size 4 that equals the model's input size, and labels whose size
is an integer fraction of it make every resampling step exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sam_configs import MINIMAL

from mopeft_jax import Sam
from mopeft_jax.data import SyntheticSegmentation
from mopeft_jax.evaluation import (
    confusion_matrix,
    connected_segments,
    loop,
    mean_iou,
    oracle_prompts,
    resize_label_longest_side,
    segmentation_metrics,
)
from mopeft_jax.inference.predictor import prompt_bucket

TINY = MINIMAL
# Low-res logits at the input resolution: a stand-in decoder can draw any input-frame mask.
FINE_64 = TINY.replace(patch_size=4)
FINE_128 = TINY.replace(patch_size=4, image_size=128)


@pytest.fixture(scope="module")
def tiny():
    model = Sam(TINY)
    return model, model.init_params(jax.random.key(0))


def _fine(config):
    """A model whose decoder a stand-in replaces, with random params of the right shapes.

    (`init_params` compiles the whole model, seconds per config; only the encoder, whose output
    the stand-ins ignore, runs on these params.)
    """
    model = Sam(config)
    assert config.low_res_mask_size == config.image_size
    shapes = jax.eval_shape(model.init_params, jax.random.key(1))
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(
        lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype), shapes
    )
    return model, params


class LabelRecorder:
    """A source wrapper that remembers the current image's label in the model's input frame."""

    def __init__(self, examples, image_size):
        self.examples = examples
        self.image_size = image_size
        self.current = None

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        example = self.examples[index]
        self.current = resize_label_longest_side(example["label"], self.image_size)
        return example


class StandInDecoder:
    """Replaces `Sam.decode`: low-res logits drawn by `draw(label_in, prompt, size)`, an (L, L) float map.

    Output 0 of the three multimask outputs is the drawing; outputs 1 and 2 are its negation,
    so evaluating any but the first would break the expected results. `traces` counts the
    compilations of the decoder.
    """

    def __init__(self, recorder, draw):
        self.recorder = recorder
        self.draw = draw
        self.traces = 0
        self.calls = 0

    def __call__(
        self,
        module,
        image_embeddings,
        point_coords=None,
        point_labels=None,
        boxes=None,
        mask_inputs=None,
        multimask_output=True,
    ):
        self.traces += 1
        assert multimask_output
        size = module.config.low_res_mask_size
        if boxes is not None:
            prompts, labels = boxes, jnp.ones(boxes.shape[:1], jnp.int32)
        else:
            assert point_coords.shape[1] == 1  # one positive point per prompt
            prompts, labels = point_coords[:, 0], point_labels[:, 0]

        def host(prompts, labels):
            self.calls += 1
            assert np.all(np.asarray(labels) == 1)
            first = np.stack([self.draw(self.recorder.current, p, size) for p in prompts])
            first = first.astype(np.float32)
            return np.stack([first, -first, -first], axis=1)

        batch = prompts.shape[0]
        shape = jax.ShapeDtypeStruct((batch, 3, size, size), jnp.float32)
        masks = jax.pure_callback(host, shape, prompts, labels)
        return masks, jnp.zeros((batch, 3), jnp.float32)


@pytest.fixture
def stand_in(monkeypatch):
    """Installs a stand-in decoder, on a cache of jitted functions emptied before and after
    (functions traced with the stand-in must not serve later tests)."""

    def install(recorder, draw):
        decoder = StandInDecoder(recorder, draw)
        loop.compiled_functions.cache_clear()
        monkeypatch.setattr(Sam, "decode", decoder)
        return decoder

    yield install
    loop.compiled_functions.cache_clear()


def _oracle_draw(label_in, prompt, size):
    """+10 on the ground-truth segment of the prompt (found in the input-frame label), -10 else."""
    segments = connected_segments(label_in, ignore_label=255, min_pixels=10)
    if len(prompt) == 4:
        matches = [s for s in segments if tuple(s.box) == tuple(int(v) for v in prompt)]
    else:
        x, y = (int(v) for v in prompt)
        matches = [s for s in segments if s.full_mask(label_in.shape)[y, x]]
    logits = np.full((size, size), -10.0, np.float32)
    if not segments:  # the dummy prompt of an image without segments
        return logits
    assert len(matches) == 1, f"prompt {prompt} matches {len(matches)} segments"
    logits[: label_in.shape[0], : label_in.shape[1]][matches[0].full_mask(label_in.shape)] = 10
    return logits


def _oracle_examples(num_images):
    """Synthetic images with object-border ignore bands, and one all-ignore image.

    64 x 48 labels are an exact half of the 128 x 96 input frame. Non-background segments too
    small to get a prompt (< 10 pixels at input scale) are set to ignore: the oracle decoder only
    knows prompted segments (unprompted background is still found by the background rule).
    """
    source = SyntheticSegmentation("noise_shift", "val", num_images, image_size=(64, 48), seed=3)
    examples = []
    for i in range(num_images):
        example = dict(source[i])
        label = example["label"].copy()
        for segment in connected_segments(label, min_pixels=0):
            if segment.class_id != 0 and segment.size * 4 < 10:
                label[segment.full_mask(label.shape)] = 255
        example["label"] = label
        examples.append(example)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    examples.append({"image": image, "label": np.full((64, 48), 255, np.uint8)})
    return examples


@pytest.mark.parametrize("kind", ["box", "point"])
def test_oracle_decoder_gives_perfect_miou(stand_in, kind):
    """(a) Perfect masks through the whole plumbing give mIoU exactly 1."""
    model, params = _fine(FINE_128)
    examples = _oracle_examples(3)
    labels = np.stack([e["label"] for e in examples[:3]])
    assert (labels == 0).any() and (labels == 255).any() and len(np.unique(labels)) > 3
    recorder = LabelRecorder(examples, FINE_128.image_size)
    decoder = stand_in(recorder, _oracle_draw)
    # A small bucket: images with more prompts are decoded in chunks.
    result = loop.evaluate_source(
        model,
        params,
        recorder,
        num_classes=5,
        background_class=0,
        prompt_kind=kind,
        prompt_bucket=3,
        progress=False,
    )
    confusion = result.confusion
    assert result.num_images == 4
    assert confusion.sum() == int((labels != 255).sum())
    assert np.array_equal(confusion, np.diag(np.diag(confusion)))
    assert result.miou == 1.0
    # One compilation per padded chunk size (the next power of two, at most the bucket), not
    # per number of prompts.
    counts = [
        len(oracle_prompts(resize_label_longest_side(e["label"], FINE_128.image_size), kind)[0])
        for e in examples
    ]
    sizes = {prompt_bucket(min(3, n - start), 3) for n in counts for start in range(0, n, 3)}
    assert len(sizes) > 1, (counts, sizes)
    assert decoder.traces == len(sizes)
    assert decoder.calls > 4


def _box_fill_draw(label_in, box, size):
    """1 + 1/area inside the box (the smaller box wins where boxes overlap), -1 outside."""
    x0, y0, x1, y1 = (int(v) for v in box)
    logits = np.full((size, size), -1.0, np.float32)
    logits[y0:y1, x0:x1] = 1 + 1 / ((x1 - x0) * (y1 - y0))
    return logits


def test_hand_computed_confusion(stand_in):
    """(b) Two tiny labels, box-filling masks, confusion computed by hand."""
    model, params = _fine(FINE_64)
    rng = np.random.default_rng(0)
    # Image 1, 4 x 4 (x16 in the input frame). Segments and their boxes (label pixels):
    # class 1: the L, box rows/cols 0-2; class 0: one segment, box = the whole image;
    # class 2: box rows/cols 2-3. The smaller box wins: class 2 on its box, class 1 on the
    # rest of its box (3 background pixels there become 1), class 0 on the 4 remaining pixels.
    label1 = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 0, 0],
            [1, 0, 2, 2],
            [0, 0, 2, 255],
        ],
        np.uint8,
    )
    # Image 2, 32 x 24 (x2): class 0 in rows 16-31, cols 0-15 (prompted, its box exact); two
    # class-1 pixels (8 < 10 pixels in the input frame: no prompt) where no logit is positive,
    # so the background class, 2 here, takes them; the rest is ignored.
    label2 = np.full((32, 24), 255, np.uint8)
    label2[16:, :16] = 0
    label2[5, 20:22] = 1
    examples = [
        {"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": label1},
        {"image": rng.integers(0, 256, (32, 24, 3), dtype=np.uint8), "label": label2},
    ]
    recorder = LabelRecorder(examples, FINE_64.image_size)
    stand_in(recorder, _box_fill_draw)
    result = loop.evaluate_source(
        model, params, recorder, num_classes=3, background_class=2, progress=False
    )
    expected = np.array(
        [
            [4 + 256, 3, 0],
            [0, 5, 2],
            [0, 0, 3],
        ]
    )
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.confusion.dtype == np.int64
    np.testing.assert_allclose(result.iou_per_class, [260 / 263, 5 / 10, 3 / 5])
    assert result.miou == pytest.approx((260 / 263 + 0.5 + 0.6) / 3)
    assert result.num_images == 2 and result.seconds > 0


def test_chunked_prompts_match_one_big_bucket(tiny):
    """(c) More prompts than the bucket: the chunks give what one big bucket gives."""
    model, params = tiny
    source = SyntheticSegmentation("shape_shift", "val", 2, image_size=(64, 56), seed=1)
    counts = [
        len(oracle_prompts(resize_label_longest_side(source[i]["label"], 64), "box")[0])
        for i in range(len(source))
    ]
    assert max(counts) > 2 * 3  # three chunks or more
    kwargs = dict(num_classes=5, background_class=0, prompt_kind="box", progress=False)
    small = loop.evaluate_source(model, params, source, prompt_bucket=3, **kwargs)
    big = loop.evaluate_source(model, params, source, prompt_bucket=128, **kwargs)
    np.testing.assert_array_equal(small.confusion, big.confusion)
    assert small.miou == big.miou


@pytest.mark.parametrize("kind", ["box", "point"])
def test_real_tiny_model_end_to_end(tiny, kind):
    """(d) The random tiny SAM runs end to end; every non-ignore pixel is counted once."""
    model, params = tiny
    source = SyntheticSegmentation("noise_shift", "val", 3, image_size=(48, 40))
    result = loop.evaluate_source(
        model, params, source, num_classes=5, background_class=0, prompt_kind=kind, progress=False
    )
    labels = np.stack([source[i]["label"] for i in range(3)])
    assert (labels == 255).any()
    assert result.confusion.shape == (5, 5)
    assert result.confusion.sum() == int((labels != 255).sum())
    miou, iou = mean_iou(result.confusion)
    assert result.miou == miou and 0 <= miou <= 1
    np.testing.assert_array_equal(result.iou_per_class, iou)
    limited = loop.evaluate_source(
        model,
        params,
        source,
        num_classes=5,
        background_class=0,
        prompt_kind=kind,
        max_images=1,
        progress=False,
    )
    assert limited.num_images == 1
    assert limited.confusion.sum() == int((labels[0] != 255).sum())


def test_on_image_sees_each_prediction_and_label(tiny):
    """`on_image` gets every evaluated image's class map and label, in order: those of
    predict_class_map, and together the confusion matrix."""
    model, params = tiny
    source = SyntheticSegmentation("color_shift", "val", 3, image_size=(48, 40), seed=2)
    seen = []
    result = loop.evaluate_source(
        model,
        params,
        source,
        num_classes=5,
        background_class=0,
        progress=False,
        on_image=lambda index, example, pred, label: seen.append((index, example, pred, label)),
    )
    assert [index for index, *_ in seen] == [0, 1, 2]
    confusion = np.zeros((5, 5), np.int64)
    for index, example, pred, label in seen:
        np.testing.assert_array_equal(example["image"], source[index]["image"])
        expected, expected_label = loop.predict_class_map(
            model, params, example["image"], example["label"], num_classes=5, background_class=0
        )
        np.testing.assert_array_equal(pred, expected)
        np.testing.assert_array_equal(label, expected_label)
        confusion += confusion_matrix(pred, label, 5)
    np.testing.assert_array_equal(result.confusion, confusion)


def _result(miou, images=1):
    """A result whose other figures are functions of its mIoU: mACC = mIoU + 0.1, pACC = 0.9,
    fwIoU = mIoU / 2, CoI-mIoU NaN (no class of interest present)."""
    return loop.EvalResult(
        np.eye(2, dtype=np.int64),
        miou,
        np.array([miou]),
        images,
        1.0,
        macc=miou + 0.1,
        pacc=0.9,
        fwiou=miou / 2,
    )


def test_results_table_means():
    results = {
        "bdd100k": _result(0.5, 10),
        "paxray_lungs": _result(0.8),
        "paxray_bones": _result(0.6),
        "kvasir_instrument": _result(0.2),
        "deepcrack": _result(0.4),
    }
    domains = {
        "bdd100k": "General",
        "paxray_lungs": "Medical Sciences",
        "paxray_bones": "Medical Sciences",
        "kvasir_instrument": "Medical Sciences",
        "deepcrack": "Engineering",
    }
    table = loop.results_table(results, domains)
    lines = table.splitlines()
    assert lines[0] == "| Dataset | Domain | Images | mIoU (%) | mACC | pACC | fwIoU | CoI-mIoU |"
    assert "| bdd100k | General | 10 | 50.00 | 60.00 | 90.00 | 25.00 | n/a |" in lines
    assert (
        "| PAXRay-4 (mean of 2) | Medical Sciences |  | 70.00 | 80.00 | 90.00 | 35.00 | n/a |"
        in lines
    )
    # Medical: PAXRay-4 (70) and Kvasir (20) count one each.
    assert "| _Medical Sciences_ (mean of 2) |  |  | 45.00 | 55.00 | 90.00 | 22.50 | n/a |" in lines
    assert "| _Engineering_ (mean of 1) |  |  | 40.00 | 50.00 | 90.00 | 20.00 | n/a |" in lines
    # Benchmark: bdd 50, PAXRay-4 70, kvasir 20, deepcrack 40.
    assert lines[-1] == "| **Mean** (4 datasets) |  |  | 45.00 | 55.00 | 90.00 | 22.50 | n/a |"


def test_result_has_every_mess_figure_of_its_confusion():
    """The loop's result carries segmentation_metrics of the summed confusion matrix."""
    confusion = np.array([[50, 2, 0], [4, 30, 6], [0, 8, 0]])
    result = loop.EvalResult.from_confusion(confusion, 3, 1.0, classes_of_interest=(1, 2))
    figures = segmentation_metrics(confusion, classes_of_interest=(1, 2))
    for key in ("miou", "macc", "pacc", "fwiou", "coi_miou", "coi_macc"):
        assert getattr(result, key) == figures[key], key
    assert result.pacc == pytest.approx(80 / 100)
    record = result.to_json()
    assert record["coi_miou"] == pytest.approx(figures["coi_miou"])
    assert record["protocol"] == "mess"
