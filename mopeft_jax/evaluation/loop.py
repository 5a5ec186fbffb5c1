"""SAM evaluated as the MESS benchmark evaluates it (docs/evaluation.md), over any dataset.

Per image (``source[i]`` a dict with ``"image"`` (H, W, 3) uint8 and ``"label"`` (H, W) int):

1. the image is preprocessed exactly as ``segment_anything`` does it
   (:func:`mopeft_jax.preprocessing.preprocess_image`: resized so that its longest side is
   ``model.config.image_size``, normalised and zero-padded);
2. the label is resized (nearest) to the same longest side and the oracle prompts are computed on
   it (:func:`mopeft_jax.evaluation.oracle_prompts`): one per 4-connected segment of at least 10
   pixels, background included, at most 100, largest first;
3. the image is encoded once; all its prompts are decoded against the one embedding, cut into
   chunks of at most ``prompt_bucket`` and each padded up to the next power of two (at most the
   bucket), so that the jitted decoder compiles a few times, not once per prompt count;
4. of the three multimask outputs the first is kept (mask token 1, as SAM-MESS does), its logits
   are upscaled to the original label size unbinarised
   (:func:`mopeft_jax.sam.transforms.postprocess_masks`) and turned into a class map
   (:func:`mopeft_jax.evaluation.semantic_map`);
5. the image's :func:`~mopeft_jax.evaluation.confusion_matrix` is added to the dataset's; the
   mIoU comes from the dataset-level matrix (:func:`~mopeft_jax.evaluation.mean_iou`, with MESS's
   own rule by default).

:func:`results_table` formats several datasets' results as a markdown table with per-domain and
benchmark means (PAXRay-4 is the mean of its four binary datasets and counts as one dataset).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mopeft_jax.evaluation.metrics import (
    confusion_matrix,
    group_means,
    mean_of,
    segmentation_metrics,
)
from mopeft_jax.evaluation.prompts import oracle_prompts
from mopeft_jax.evaluation.semantic_map import semantic_map
from mopeft_jax.inference.predictor import prompt_bucket as padded_size
from mopeft_jax.peft.gates import gate_values
from mopeft_jax.preprocessing import preprocess_image, resize_label_longest_side
from mopeft_jax.sam.model import Sam
from mopeft_jax.sam.transforms import postprocess_masks
from mopeft_jax.segments import IGNORE_LABEL, check_label, check_prompt_kind

__all__ = [
    "CompiledFunctions",
    "EvalResult",
    "PAXRAY_PREFIX",
    "PAXRAY_NAME",
    "compiled_functions",
    "decoder_params",
    "evaluate_dataset",
    "evaluate_source",
    "predict_class_map",
    "results_table",
]

PAXRAY_PREFIX = "paxray_"
"""Datasets whose names start with this are the binary PAXRay datasets, reported as one."""

PAXRAY_NAME = "PAXRay-4"


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The MESS evaluation of one dataset.

    Attributes:
      confusion: ``(K, K)`` int64 confusion matrix summed over the images, rows ground truth,
        columns prediction, ignore pixels left out.
      miou: mean IoU as a fraction in ``[0, 1]``, by ``protocol``'s rule.
      iou_per_class: ``(K,)`` float64, NaN for the classes the protocol leaves out.
      num_images: images evaluated.
      seconds: wall-clock time of the evaluation (compilation included).
      protocol: the mIoU rule (``mean_iou``'s ``protocol``: "mess" or "detectron2").
      macc, pacc, fwiou, coi_miou, coi_macc: MESS's other figures, fractions
        (:func:`mopeft_jax.evaluation.metrics.segmentation_metrics`).
    """

    confusion: np.ndarray
    miou: float
    iou_per_class: np.ndarray
    num_images: int
    seconds: float
    protocol: str = "mess"
    macc: float = math.nan
    pacc: float = math.nan
    fwiou: float = math.nan
    coi_miou: float = math.nan
    coi_macc: float = math.nan

    @classmethod
    def from_confusion(
        cls,
        confusion: np.ndarray,
        num_images: int,
        seconds: float,
        protocol: str = "mess",
        classes_of_interest: Optional[Sequence[int]] = None,
    ) -> "EvalResult":
        """Every figure of a dataset's summed confusion matrix."""
        figures = segmentation_metrics(
            confusion, classes_of_interest=classes_of_interest, protocol=protocol
        )
        return cls(
            confusion,
            figures["miou"],
            figures["iou_per_class"],
            num_images,
            seconds,
            protocol,
            **{k: figures[k] for k in ("macc", "pacc", "fwiou", "coi_miou", "coi_macc")},
        )

    def to_json(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (NaN as None; mIoU as a fraction and in percent)."""
        return {
            "miou": _json_float(self.miou),
            "miou_percent": _json_float(100.0 * self.miou),
            "iou_per_class": [_json_float(v) for v in self.iou_per_class],
            **{
                k: _json_float(getattr(self, k))
                for k in ("macc", "pacc", "fwiou", "coi_miou", "coi_macc")
            },
            "num_images": int(self.num_images),
            "seconds": float(self.seconds),
            "protocol": self.protocol,
            "confusion": np.asarray(self.confusion).tolist(),
        }


def _json_float(value) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


# ---------------------------------------------------------------------------------------------
# Jitted model functions, compiled once per model and shapes
# ---------------------------------------------------------------------------------------------


class CompiledFunctions(NamedTuple):
    """The jitted pieces of one model; each compiles once per input shape.

    Attributes:
      encode: ``(params, image (S, S, 3) float32) -> ((1, h, w, D) image embedding, gates)``,
        ``gates`` the model's gate values, ``{"blocks_3/lora_q": (1,), ...}`` (empty for a
        model without gates), so that reading them costs no second compilation of the encoder.
      decode: ``{"box": f, "point": f}``, ``f(decoder_params, embedding (1, h, w, D), prompts)
        -> (P, L, L)`` low-res logits of the first multimask output per prompt, where
        ``decoder_params`` is :func:`decoder_params` of the model's params and ``prompts`` is
        ``(P, 4)`` boxes ``x0, y0, x1, y1`` or ``(P, 2)`` positive points ``x, y``, float32
        pixels of the resized (unpadded) input frame.
    """

    encode: Callable
    decode: Dict[str, Callable]


# The PEFT layers all live in the image encoder: the prompt encoder and mask decoder are the
# same module with or without them.
DECODER_MODULES = ("prompt_encoder", "mask_decoder")


def decoder_params(params) -> Dict[str, Any]:
    """The prompt encoder's and mask decoder's params: what the jitted decoders take."""
    return {name: params[name] for name in DECODER_MODULES}


# Cached per model (a frozen dataclass, equal for equal configs): the jitted closures take the
# params as an argument, so one compilation serves every checkpoint of the same architecture.
# The decoders of a model with PEFT layers are those of the model without them, which take
# only the decoder's params: a comparison of seven methods compiles them once, not seven times.
@functools.lru_cache(maxsize=8)
def compiled_functions(model: Sam) -> CompiledFunctions:
    """The (cached) jitted encoder and decoders of ``model``."""

    def encode(params, image):
        embedding, state = model.apply(
            {"params": params}, image[None], method=Sam.encode_image, mutable=["gates"]
        )
        return embedding, gate_values(state)

    if model.config.peft is not None:
        plain = compiled_functions(Sam(model.config.replace(peft=None)))
        return CompiledFunctions(encode=jax.jit(encode), decode=plain.decode)

    def decode_boxes(params, embedding, boxes):
        masks, _ = model.apply(
            {"params": params}, embedding, boxes=boxes, multimask_output=True, method=Sam.decode
        )
        # Multimask output 0 is mask token 1: SAM-MESS keeps it, not the single-mask token 0.
        return masks[:, 0]

    def decode_points(params, embedding, points):
        coords = points[:, None, :]
        labels = jnp.ones(coords.shape[:2], jnp.int32)
        masks, _ = model.apply(
            {"params": params},
            embedding,
            point_coords=coords,
            point_labels=labels,
            multimask_output=True,
            method=Sam.decode,
        )
        return masks[:, 0]

    return CompiledFunctions(
        encode=jax.jit(encode),
        decode={"box": jax.jit(decode_boxes), "point": jax.jit(decode_points)},
    )


# The sizes are static: one compilation per (prompt count, input size, label size); the prompt
# count is rounded up to a power of two by the caller to keep the variants few.
_postprocess = jax.jit(
    postprocess_masks, static_argnames=("input_size", "original_size", "image_size")
)


# ---------------------------------------------------------------------------------------------
# Per-image steps
# ---------------------------------------------------------------------------------------------


def _pad_prompts(prompts: np.ndarray, size: int) -> np.ndarray:
    """``(n, ...)`` -> ``(size, ...)`` float32, padded with copies of the first prompt.

    Valid prompts (not zeros) keep the padded rows numerically harmless; their outputs are
    dropped.
    """
    prompts = np.asarray(prompts, np.float32)
    pad = np.repeat(prompts[:1], size - len(prompts), axis=0)
    return np.concatenate([prompts, pad], axis=0)


def _image_class_map(
    fns: CompiledFunctions,
    params,
    pixels: jax.Array,
    input_size: Tuple[int, int],
    original_size: Tuple[int, int],
    image_size: int,
    prompts: np.ndarray,
    classes: np.ndarray,
    prompt_kind: str,
    prompt_bucket: int,
    num_classes: int,
    background_class: Optional[int],
) -> np.ndarray:
    """The ``(H, W)`` int64 class map of one image from its ``(N, ...)`` prompts."""
    embedding, _ = fns.encode(params, pixels)
    decode = fns.decode[prompt_kind]
    decoder = decoder_params(params)
    # Running per-class maximum of the upscaled logits. semantic_map takes the per-class maximum
    # over a class's prompts first, so handing it one pre-reduced map per class gives the same
    # class map while holding at most one chunk of full-size logits at a time.
    class_max: Dict[int, np.ndarray] = {}
    for start in range(0, len(prompts), prompt_bucket):
        chunk = prompts[start : start + prompt_bucket]
        n = len(chunk)
        # Padded to a power of two, not to the bucket: the demo's images have 5-11 prompts, and
        # decoding 16 instead of 100 made its evaluation 3.7x faster (2026-12-02).
        size = padded_size(n, prompt_bucket)
        low_res = decode(decoder, embedding, _pad_prompts(chunk, size))
        logits = _postprocess(
            low_res,
            input_size=tuple(input_size),
            original_size=tuple(original_size),
            image_size=image_size,
        )
        logits = np.asarray(logits)[:n]
        chunk_classes = classes[start : start + n]
        for c in np.unique(chunk_classes):
            c_max = logits[chunk_classes == c].max(axis=0)
            c = int(c)
            class_max[c] = np.maximum(class_max[c], c_max) if c in class_max else c_max
    present = sorted(class_max)
    return semantic_map(
        np.stack([class_max[c] for c in present]),
        np.asarray(present, np.int64),
        num_classes,
        background_class,
    )


def predict_class_map(
    model: Sam,
    params,
    image,
    label,
    *,
    num_classes: int,
    background_class: Optional[int],
    ignore_label: int = IGNORE_LABEL,
    prompt_kind: str = "box",
    prompt_bucket: int = 100,
    seed: int = 42,
    name: str = "the example",
) -> Tuple[np.ndarray, np.ndarray]:
    """The MESS prediction for one image: its ``(H, W)`` class map and its label.

    Oracle prompts from the label resized like the image, one encoding, all prompts decoded
    against it, logits upscaled to the label's size, then ``semantic_map``.
    """
    config = model.config
    label = check_label(label, shape=np.shape(image), name=f"{name}: the label")
    pixels, input_size = preprocess_image(
        image, config.image_size, config.pixel_mean, config.pixel_std
    )
    # Prompts live in the resized input frame, as SAM's prompt encoder expects them.
    label_in = resize_label_longest_side(label, config.image_size)
    assert label_in.shape == input_size, (label_in.shape, input_size)
    prompts, classes = oracle_prompts(label_in, prompt_kind, ignore_label=ignore_label, seed=seed)
    pred = _image_class_map(
        compiled_functions(model),
        params,
        pixels,
        input_size,
        label.shape,
        config.image_size,
        prompts,
        classes,
        prompt_kind,
        prompt_bucket,
        num_classes,
        background_class,
    )
    return pred, label


def evaluate_source(
    model: Sam,
    params,
    source,
    *,
    num_classes: int,
    background_class: Optional[int],
    ignore_label: Optional[int] = IGNORE_LABEL,
    prompt_kind: str = "box",
    max_images: Optional[int] = None,
    prompt_bucket: int = 100,
    seed: int = 42,
    protocol: str = "mess",
    classes_of_interest: Optional[Sequence[int]] = None,
    progress: bool = True,
    desc: Optional[str] = None,
    on_image: Optional[Callable[[int, Dict[str, Any], np.ndarray, np.ndarray], None]] = None,
) -> EvalResult:
    """Evaluates ``model`` on ``source`` with MESS's oracle prompts (see the module docstring).

    Args:
      model: the SAM module (its config gives the input size and normalisation).
      params: its parameters (numpy or jax arrays; moved to the device once).
      source: random-access (``len``, ``source[i]``) of dicts with ``"image"`` ``(H, W, 3)``
        uint8 and ``"label"`` ``(H, W)`` integer class indices or ``ignore_label``.
      num_classes: ``K``, classes of the dataset (label values ``0 .. K-1``).
      background_class: the class taking the pixels where no prompted class has a positive
        logit; None (or a value ``>= K``) for a dataset without one (see ``semantic_map``).
      ignore_label: label value never prompted and not counted.
      prompt_kind: ``"box"`` or ``"point"``.
      max_images: evaluate only the first this many images (None: all).
      prompt_bucket: the most prompts decoded per call: an image's prompts are cut into
        chunks of it, each padded to the next power of two (at most ``prompt_bucket``), so
        the decoder compiles once per padded size (at most 8 sizes for 100).
      seed: seed of the oracle points, the same for every image (an image's prompts do not
        depend on which other images are evaluated).
      protocol: the mIoU rule, ``mean_iou``'s: "mess" (MESS's evaluator, the default) or
        "detectron2".
      classes_of_interest: the classes of CoI-mIoU (None: every class).
      progress: show a tqdm progress bar.
      desc: the progress bar's label.
      on_image: called as ``on_image(index, example, prediction, label)`` after each image,
        with its ``(H, W)`` predicted class map and label (to plot or keep predictions
        without computing them again).

    Returns:
      The :class:`EvalResult` of the dataset.
    """
    check_prompt_kind(prompt_kind)
    if prompt_bucket < 1:
        raise ValueError(f"prompt_bucket must be >= 1, got {prompt_bucket}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    num_images = len(source) if max_images is None else min(len(source), max(0, max_images))
    # Once, not per call: numpy params would otherwise be copied to the device at every call.
    params = jax.device_put(params)

    start_time = time.perf_counter()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for index in tqdm(range(num_images), desc=desc, disable=not progress, unit="img"):
        example = source[index]
        pred, label = predict_class_map(
            model,
            params,
            example["image"],
            example["label"],
            num_classes=num_classes,
            background_class=background_class,
            ignore_label=ignore_label,
            prompt_kind=prompt_kind,
            prompt_bucket=prompt_bucket,
            seed=seed,
            name=f"example {index}",
        )
        confusion += confusion_matrix(pred, label, num_classes, ignore_label)
        if on_image is not None:
            on_image(index, example, pred, label)
    seconds = time.perf_counter() - start_time
    return EvalResult.from_confusion(confusion, num_images, seconds, protocol, classes_of_interest)


def evaluate_dataset(model: Sam, params, dataset, **options) -> EvalResult:
    """:func:`evaluate_source` on a dataset of the registry (``mopeft_jax.data.load_dataset``),
    with its number of classes, background class and ignore label; ``options`` are
    :func:`evaluate_source`'s (``prompt_kind``, ``max_images``, ...)."""
    info = dataset.info
    options.setdefault("desc", dataset.name)
    return evaluate_source(
        model,
        params,
        dataset.source,
        num_classes=info.num_classes,
        background_class=info.background_class,
        ignore_label=info.ignore_label,
        classes_of_interest=info.classes_of_interest,
        **options,
    )


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"


# The figures of a results table, as MESS reports them: (EvalResult attribute, column name).
TABLE_FIGURES = (
    ("miou", "mIoU (%)"),
    ("macc", "mACC"),
    ("pacc", "pACC"),
    ("fwiou", "fwIoU"),
    ("coi_miou", "CoI-mIoU"),
)


def results_table(results: Mapping[str, EvalResult], domains: Mapping[str, str]) -> str:
    """A markdown table of per-dataset figures (percent), per-domain means and the benchmark mean.

    The figures are MESS's: mIoU, mACC, pACC, fwIoU and CoI-mIoU. The binary PAXRay datasets
    (names starting with ``paxray_``) are listed and then averaged into one ``PAXRay-4`` entry,
    which counts as one dataset in the domain and benchmark means (as MESS reports it). All
    means are unweighted means over datasets.

    Args:
      results: dataset name -> its result, in the order the rows should have.
      domains: dataset name -> domain (e.g. a MESS domain, or "Synthetic").

    Returns:
      The table, rows ``| Dataset | Domain | Images | mIoU (%) | mACC | pACC | fwIoU |
      CoI-mIoU |``.
    """
    figures = {
        key: {name: float(getattr(r, key)) for name, r in results.items()}
        for key, _ in TABLE_FIGURES
    }
    paxray = [name for name in results if name.startswith(PAXRAY_PREFIX)]

    def cells(values):
        return tuple(_percent(v) for v in values)

    # Benchmark entries: every dataset, the PAXRay ones merged into one.
    entries: Dict[str, Dict[str, float]] = {key: {} for key in figures}
    entry_domain: Dict[str, str] = {}
    rows: List[Tuple[str, ...]] = []
    for name, result in results.items():
        domain = domains.get(name, "unknown")
        rows.append(
            (name, domain, str(result.num_images), *cells(f[name] for f in figures.values()))
        )
        if name in paxray:
            if name == paxray[-1]:
                for key, values in figures.items():
                    entries[key][PAXRAY_NAME] = mean_of(values, paxray)
                entry_domain[PAXRAY_NAME] = domain
                label = f"{PAXRAY_NAME} (mean of {len(paxray)})"
                rows.append((label, domain, "", *cells(e[PAXRAY_NAME] for e in entries.values())))
        else:
            for key, values in figures.items():
                entries[key][name] = values[name]
            entry_domain[name] = domain

    groups: Dict[str, List[str]] = {}
    for name, domain in entry_domain.items():
        groups.setdefault(domain, []).append(name)
    means = {key: group_means(values, groups) for key, values in entries.items()}
    for domain in groups:
        label = f"_{domain}_ (mean of {len(groups[domain])})"
        rows.append((label, "", "", *cells(m[domain] for m in means.values())))
    count = len(entry_domain)
    overall = (mean_of(values) if values else float("nan") for values in entries.values())
    rows.append((f"**Mean** ({count} datasets)", "", "", *cells(overall)))

    header = ("Dataset", "Domain", "Images", *(column for _, column in TABLE_FIGURES))
    lines = ["| " + " | ".join(header) + " |", "|:--|:--|" + "--:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
