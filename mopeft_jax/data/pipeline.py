"""The grain input pipeline of training: SAM's pre-processing and prompts sampled from ground truth.

One example ``{"image": (H, W, C) uint8, "label": (H, W) int, ...}`` of a random-access source
(:class:`mopeft_jax.data.synthetic.SyntheticSegmentation`, a tfds ``data_source``, ...) becomes,
through :func:`preprocess_example` (pure numpy and PIL):

``image``    (S, S, 3) float32: SAM's pre-processing, exactly the official one
             (:func:`mopeft_jax.preprocessing.preprocess_image`: resized so that its longest side
             is S, normalised, zero-padded at the bottom/right).
``boxes``    (P, 4) float32 ``x0, y0, x1, y1`` in input-frame pixels (``cv2.boundingRect``
             semantics: exclusive end), zeros for padding prompts and when no box is asked for.
``points``   (P, 2) float32 ``x, y``: one positive interior point per prompt, zeros for padding
             prompts and when no point is asked for.
``masks``    (P, L, L) float32 in {0, 1}: each prompt's segment in the padded input frame at the
             decoder's low resolution L (see :func:`downsample_mask`).
``valid``    (P,) bool, False for padding prompts.
``classes``  (P,) int32, the label value of each prompt's segment, -1 for padding prompts.

These are the keys the train step consumes (:mod:`mopeft_jax.train.step`), with the batch axis
added by :func:`make_dataset`.

Prompts (docs/method.md): one per 4-connected segment, with the segment rule of the evaluation
(docs/evaluation.md) computed on the label resized like the image: every label value but the ignore
label is a class, background included, and segments need ``min_pixels`` pixels. Up to P segments
are kept, a uniformly random subset when there are more. The segments, boxes and points come from
:mod:`mopeft_jax.segments` (``connected_segments``, ``segment_box``,
``segment_point``), the functions ``segment_prompts`` is made of, so training and evaluation
share one rule. (``segment_prompts`` itself returns no segment masks, which the loss needs, and
would draw a point for every segment, including those not sampled.)

:func:`make_dataset` builds the grain pipeline: source -> per-host shard -> shuffle (reshuffled
every epoch) -> repeat -> ``random_map`` (per-element generator derived from the seed and the
element's position in the stream) -> batch -> optional multiprocessing prefetch. It is
deterministic, and its iterator's ``get_state()``/``set_state()`` resume the exact stream.

Host-side only: numpy, PIL, scipy and grain; no model or evaluation code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Tuple

import grain
import numpy as np

from mopeft_jax.preprocessing import (
    PIXEL_MEAN,
    PIXEL_STD,
    preprocess_image,
    resize_label_longest_side,
)
from mopeft_jax.segments import (
    IGNORE_LABEL,
    PROMPT_KINDS,
    Segment,
    check_label,
    connected_segments,
    segment_box,
    segment_point,
)

__all__ = [
    "PROMPT_FILLS",
    "PipelineConfig",
    "PreprocessTransform",
    "batch_spec",
    "downsample_mask",
    "make_dataset",
    "preprocess_example",
]

#: The values of :attr:`PipelineConfig.prompt_kind`: one prompt kind, or both filled.
PROMPT_FILLS = (*PROMPT_KINDS, "both")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Settings of the training input pipeline.

    Attributes:
        image_size: S, side of the square, padded encoder input (1024 for SAM).
        low_res_size: L, side of the ground-truth masks: the decoder's mask resolution,
            4 x image_size / patch (256 for SAM). Must divide ``image_size``.
        max_prompts: P, prompts per image (padded with invalid prompts).
        prompt_kind: ``"box"``, ``"point"`` or ``"both"`` (fills boxes and points).
        min_pixels: minimum segment size, in pixels of the resized label.
        ignore_label: label value never prompted (None: none).
        batch_size: images per batch (per host).
        seed: seed of the shuffle and of the per-element prompt sampling.
        shuffle: shuffle the examples (reshuffled every epoch).
        num_epochs: passes over the data; None repeats forever.
        drop_remainder: drop a last, incomplete batch (only matters for a finite stream).
        worker_count: grain worker processes for the pre-processing; 0 runs it in this process.
        prefetch_batches: batches prepared ahead of the one in use (in this process, by as many
            threads).
        pixel_mean, pixel_std: SAM's normalisation, RGB in [0, 255].
    """

    image_size: int = 1024
    low_res_size: int = 256
    max_prompts: int = 16
    prompt_kind: str = "box"
    min_pixels: int = 10
    ignore_label: Optional[int] = IGNORE_LABEL
    batch_size: int = 2
    seed: int = 0
    shuffle: bool = True
    num_epochs: Optional[int] = None
    drop_remainder: bool = True
    worker_count: int = 0
    # Grain's default read-ahead is 500 elements (here batches) on 16 threads: in a run of a few
    # hundred steps most of that work is thrown away, and its threads take the cores from the
    # train step. Pretraining the demo's tiny SAM for 60 steps of 8 images took 115 s with it,
    # 82 s reading 2 batches ahead.
    prefetch_batches: int = 2
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD

    def __post_init__(self):
        for name in ("image_size", "low_res_size", "max_prompts", "batch_size", "prefetch_batches"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"PipelineConfig.{name} must be a positive int, got {value!r}")
        for name in ("min_pixels", "seed", "worker_count"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"PipelineConfig.{name} must be an int >= 0, got {value!r}")
        if self.image_size % self.low_res_size:
            raise ValueError(
                f"PipelineConfig.low_res_size ({self.low_res_size}) must divide image_size "
                f"({self.image_size}): the masks are area-averaged over whole cells"
            )
        if self.prompt_kind not in PROMPT_FILLS:
            raise ValueError(
                f"PipelineConfig.prompt_kind must be one of {PROMPT_FILLS}, got {self.prompt_kind!r}"
            )
        if self.ignore_label is not None and not _is_int(self.ignore_label):
            raise ValueError(
                f"PipelineConfig.ignore_label must be an int or None, got {self.ignore_label!r}"
            )
        if self.num_epochs is not None and (not _is_int(self.num_epochs) or self.num_epochs < 1):
            raise ValueError(
                f"PipelineConfig.num_epochs must be a positive int or None, got {self.num_epochs!r}"
            )
        for name in ("shuffle", "drop_remainder"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(
                    f"PipelineConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"PipelineConfig.{name} must be 3 numbers (RGB), got {value!r}"
                ) from None
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"PipelineConfig.{name} must be 3 finite numbers, got {value!r}")
            # Stored as a tuple of floats so that the frozen config stays hashable.
            object.__setattr__(self, name, value)
        if min(self.pixel_std) <= 0:
            raise ValueError(f"PipelineConfig.pixel_std must be positive, got {self.pixel_std}")

    @property
    def cell(self) -> int:
        """Input pixels per low-res mask pixel along each axis (``image_size // low_res_size``)."""
        return self.image_size // self.low_res_size


# ----------------------------------------------------------------------------- masks


def downsample_mask(segment: Segment, config: PipelineConfig) -> np.ndarray:
    """A segment's mask in the padded input frame at low resolution, ``(L, L)`` bool.

    Each low-res pixel covers a ``cell x cell`` block of the ``(S, S)`` input frame
    (``cell = S // L``). Its coverage is the fraction of that block inside the segment (area
    averaging, as an antialiased downscale does), and it is foreground when the coverage is at
    least 0.5 (an exact integer comparison: ``2 * count >= cell**2``).

    A segment too thin or small to cover half of any block would vanish, giving the loss an
    empty target for a valid prompt. Then the low-res pixels of maximum coverage are foreground
    instead (all of them when several tie, so a thin line stays a line rather than a dot).
    """
    cell = config.cell
    rows, cols = segment.slices
    # Only the cells touched by the segment's bounding box are counted.
    r0, c0 = rows.start // cell, cols.start // cell
    r1, c1 = -(-rows.stop // cell), -(-cols.stop // cell)
    block = np.zeros(((r1 - r0) * cell, (c1 - c0) * cell), dtype=np.int32)
    block[
        rows.start - r0 * cell : rows.stop - r0 * cell,
        cols.start - c0 * cell : cols.stop - c0 * cell,
    ] = segment.mask
    counts = block.reshape(r1 - r0, cell, c1 - c0, cell).sum(axis=(1, 3))
    local = 2 * counts >= cell * cell
    if not local.any():
        local = counts == counts.max()
    out = np.zeros((config.low_res_size, config.low_res_size), dtype=bool)
    out[r0:r1, c0:c1] = local
    return out


# ----------------------------------------------------------------------------- one example


def preprocess_example(
    example: Mapping[str, Any], config: PipelineConfig, rng: np.random.Generator
) -> dict:
    """SAM's pre-processing of one example and its prompts sampled from the ground truth.

    Args:
        example: a mapping with ``"image"`` (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 and
            ``"label"`` (H, W) (or (H, W, 1)) integer class indices; other keys are ignored.
        config: the pipeline settings (S = image_size, L = low_res_size, P = max_prompts).
        rng: draws the subset of segments (when there are more than P) and the points.

    Returns:
        A dict of numpy arrays: ``image`` (S, S, 3) float32, ``boxes`` (P, 4) float32,
        ``points`` (P, 2) float32, ``masks`` (P, L, L) float32, ``valid`` (P,) bool,
        ``classes`` (P,) int32 (see the module docstring). Valid prompts come first, largest
        segment first; an image without any segment has all prompts invalid.

    Raises:
        ValueError: if the example lacks ``image`` or ``label``, for a bad image or label shape
            or dtype, a label that does not match the image, or an image too elongated to keep
            a short side of at least one pixel.
    """
    missing = [key for key in ("image", "label") if key not in example]
    if missing:
        raise ValueError(
            f"example must have 'image' and 'label', missing {missing} (keys: {sorted(example)})"
        )
    label = check_label(example["label"], shape=np.shape(example["image"]))
    size, low, num = config.image_size, config.low_res_size, config.max_prompts
    image, _ = preprocess_image(example["image"], size, config.pixel_mean, config.pixel_std)

    # Prompts live in the input frame, so segments are found on the label resized like the image.
    label = resize_label_longest_side(label, size)
    segments = connected_segments(
        label, ignore_label=config.ignore_label, min_pixels=config.min_pixels
    )
    if len(segments) > num:
        # A uniform random subset, kept in the largest-first order of connected_segments.
        chosen = np.sort(rng.choice(len(segments), size=num, replace=False))
        segments = [segments[i] for i in chosen]

    boxes = np.zeros((num, 4), dtype=np.float32)
    points = np.zeros((num, 2), dtype=np.float32)
    masks = np.zeros((num, low, low), dtype=np.float32)
    valid = np.zeros((num,), dtype=bool)
    classes = np.full((num,), -1, dtype=np.int32)
    for i, segment in enumerate(segments):
        if config.prompt_kind in ("box", "both"):
            boxes[i] = segment_box(segment)
        if config.prompt_kind in ("point", "both"):
            points[i] = segment_point(segment, rng)
        masks[i] = downsample_mask(segment, config)
        valid[i] = True
        classes[i] = segment.class_id
    return {
        "image": image,
        "boxes": boxes,
        "points": points,
        "masks": masks,
        "valid": valid,
        "classes": classes,
    }


class PreprocessTransform(grain.transforms.RandomMap):
    """:func:`preprocess_example` as a grain ``RandomMap`` (picklable, for worker processes)."""

    def __init__(self, config: PipelineConfig):
        self.config = config

    def random_map(self, element, rng: np.random.Generator) -> dict:
        return preprocess_example(element, self.config, rng)


# ----------------------------------------------------------------------------- dataset


def _default_shard() -> Tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``, or ``(0, 1)`` without jax."""
    try:
        import jax  # Lazily: the pipeline itself needs no jax.
    except ImportError:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _ensure_absl_flags_parsed() -> None:
    """Lets grain's worker processes start in a program that does not use ``absl.app``.

    With jax loaded, grain's ``mp_prefetch`` reads an absl flag, which raises
    ``UnparsedFlagAccessError`` until flags are parsed (google/grain#1355, fixed upstream by
    reading the default). Marking the flags parsed gives every flag its default value, which is
    what an unparsed flag stands for; a later ``FLAGS(argv)`` still parses the command line.
    """
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _per_shard_seed(seed: int, shard_index: int) -> int:
    """The prompt-sampling seed of one shard.

    grain derives each element's generator from the seed and the element's position in the
    stream; positions repeat across hosts, so the shard index is mixed in to keep hosts'
    draws independent. Shard 0 uses the seed itself.
    """
    if shard_index == 0:
        return seed
    return int(np.random.SeedSequence([seed, shard_index]).generate_state(1, np.uint32)[0])


def batch_spec(config: PipelineConfig) -> dict:
    """Shapes and dtypes of one batch of :func:`make_dataset`, as ``(shape, numpy dtype)`` pairs.

    What a train step is compiled for, without reading any data.
    """
    b, s, p, low = config.batch_size, config.image_size, config.max_prompts, config.low_res_size
    return {
        "image": ((b, s, s, 3), np.dtype(np.float32)),
        "boxes": ((b, p, 4), np.dtype(np.float32)),
        "points": ((b, p, 2), np.dtype(np.float32)),
        "masks": ((b, p, low, low), np.dtype(np.float32)),
        "valid": ((b, p), np.dtype(np.bool_)),
        "classes": ((b, p), np.dtype(np.int32)),
    }


def make_dataset(
    source,
    config: PipelineConfig,
    *,
    shard_index: Optional[int] = None,
    shard_count: Optional[int] = None,
    start_batch: int = 0,
) -> grain.IterDataset:
    """The training stream of batches of a random-access source.

    Pipeline: ``MapDataset.source(source)`` -> shard ``[shard_index::shard_count]`` ->
    ``shuffle(config.seed)`` -> ``repeat(num_epochs)`` (a new order every epoch) ->
    ``random_map(preprocess_example)`` -> ``batch(batch_size, drop_remainder)`` ->
    ``[start_batch:]`` -> ``to_iter_dataset()`` -> ``mp_prefetch`` when
    ``config.worker_count > 0``.

    Every element's generator is a function of the seed (mixed with the shard index) and of the
    element's position in the stream, so the stream is the same on every run, each epoch draws
    new prompts for the same image, and ``iter(ds).get_state()`` / ``set_state()`` resume it
    exactly (save the state with the training checkpoint).

    Args:
        source: a random-access source (``__len__`` and ``__getitem__``) of examples, see
            :func:`preprocess_example`, or a ``grain.MapDataset`` of them.
        config: the pipeline settings.
        shard_index, shard_count: this host's shard; both or neither. By default
            ``jax.process_index()`` and ``jax.process_count()`` (one shard without jax). Shards
            interleave (``source[i::n]``): they are disjoint, cover the source and differ in
            length by at most one example, so with a finite ``num_epochs`` hosts may yield a
            different number of batches; repeat forever and count steps for multi-host training.
        start_batch: skip this many batches: the stream a run resumes after ``start_batch``
            steps (every batch is a function of its position, so this needs no iterator
            state and holds whatever ``worker_count`` the run resumes with).

    Returns:
        A ``grain.IterDataset`` of dicts of numpy arrays with a leading batch axis B: ``image``
        (B, S, S, 3) float32, ``boxes`` (B, P, 4) float32, ``points`` (B, P, 2) float32,
        ``masks`` (B, P, L, L) float32, ``valid`` (B, P) bool, ``classes`` (B, P) int32.

    Raises:
        ValueError: for an invalid shard, an empty source or an empty shard.
    """
    if not isinstance(config, PipelineConfig):
        raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}")
    if (shard_index is None) != (shard_count is None):
        raise ValueError(
            "give both shard_index and shard_count or neither, got "
            f"shard_index={shard_index!r}, shard_count={shard_count!r}"
        )
    if shard_index is None:
        shard_index, shard_count = _default_shard()
    if not _is_int(shard_count) or shard_count < 1:
        raise ValueError(f"shard_count must be a positive int, got {shard_count!r}")
    if not _is_int(shard_index) or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index!r}")
    shard_index, shard_count = int(shard_index), int(shard_count)

    if isinstance(source, grain.MapDataset):
        ds = source
    else:
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise ValueError(
                "source must be a random-access source (__len__ and __getitem__) or a "
                f"grain.MapDataset, got {type(source).__name__}"
            )
        ds = grain.MapDataset.source(source)
    length = len(ds)
    if length == 0:
        raise ValueError("source is empty")
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
        if len(ds) == 0:
            raise ValueError(
                f"shard {shard_index} of {shard_count} of a source of {length} examples is empty"
            )
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds.repeat(config.num_epochs)
    ds = ds.random_map(PreprocessTransform(config), seed=_per_shard_seed(config.seed, shard_index))
    ds = ds.batch(config.batch_size, drop_remainder=config.drop_remainder)
    if start_batch:
        if not _is_int(start_batch) or start_batch < 0:
            raise ValueError(f"start_batch must be an int >= 0, got {start_batch!r}")
        ds = ds[start_batch:]
    ahead = config.prefetch_batches
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=ahead, prefetch_buffer_size=ahead))
    if config.worker_count > 0:
        _ensure_absl_flags_parsed()
        ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count))
    return ids
