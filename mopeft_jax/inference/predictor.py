"""`SamPredictor`: encode an image once, then answer many prompts in its own pixel coordinates.

The official ``segment_anything.SamPredictor`` in JAX, numpy in and out, for plain SAM and for a
fine-tuned model with PEFT layers (they run in the encoder; nothing else changes). Preprocessing
is :mod:`mopeft_jax.preprocessing` (bit-identical to the official), post-processing
:func:`mopeft_jax.sam.transforms.postprocess_masks`.

Compilation: the image encoder compiles once per model; the prompt encoder + mask decoder once per
model, kind of prompt and batch bucket (prompt batches are zero-padded to a power of two, at most
``max_prompt_batch``, and longer ones are decoded in chunks of that size); the upscaling of the
masks, a cheap function, once per image size.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mopeft_jax.preprocessing import apply_boxes, apply_coords, preprocess_image, to_rgb
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam
from mopeft_jax.sam.transforms import postprocess_masks

__all__ = ["MASK_THRESHOLD", "SamPredictor", "map_in_buckets", "prompt_bucket"]

#: Logits above this are in the mask (the official ``Sam.mask_threshold``).
MASK_THRESHOLD = 0.0


@functools.partial(jax.jit, static_argnames="model")
def _encode(model: Sam, params, pixels: jax.Array) -> jax.Array:
    """Encoder input (1, S, S, 3) -> image embedding (1, h, w, D)."""
    return model.apply({"params": params}, pixels, method=Sam.encode_image)


@functools.partial(jax.jit, static_argnames=("model", "multimask_output"))
def _decode(
    model: Sam, params, embedding, point_coords, point_labels, boxes, mask_inputs, multimask_output
):
    """`Sam.decode` of B prompt sets against one embedding (1, h, w, D); None for absent prompts."""
    return model.apply(
        {"params": params},
        embedding,
        point_coords,
        point_labels,
        boxes,
        mask_inputs,
        multimask_output,
        method=Sam.decode,
    )


@functools.partial(
    jax.jit, static_argnames=("input_size", "original_size", "image_size", "return_logits")
)
def upscale_masks(
    low_res: jax.Array,
    input_size: Tuple[int, int],
    original_size: Tuple[int, int],
    image_size: int,
    return_logits: bool,
) -> jax.Array:
    """Low-res logits (..., h, w) -> logits (..., H, W) at the original size, or masks if not
    `return_logits` (logits above `MASK_THRESHOLD`)."""
    logits = postprocess_masks(low_res, input_size, original_size, image_size)
    return logits if return_logits else logits > MASK_THRESHOLD


def prompt_bucket(n: int, max_batch: int) -> int:
    """The padded size of a batch of `n` <= `max_batch` prompts: the next power of two, at most
    `max_batch`, so that any batch size reuses one of a few compilations."""
    return min(max_batch, 1 << max(n - 1, 0).bit_length())


def map_in_buckets(
    fn: Callable[..., Tuple[jax.Array, ...]], arrays: Sequence[Optional[np.ndarray]], max_batch: int
) -> Tuple[np.ndarray, ...]:
    """`fn(*arrays)` on the leading axis in chunks of at most `max_batch`, as numpy.

    Each chunk is zero-padded (None entries stay None) to `prompt_bucket(n)` rows, or to
    `max_batch` when there are several chunks; `fn` runs on it and the padding is dropped from its
    outputs, whose leading axis must be the batch's. Rows must not interact in `fn` (they do not
    in SAM's decoder), so the padding cannot change them.
    """
    n = len(next(a for a in arrays if a is not None))
    bucket = prompt_bucket(n, max_batch)
    chunks = []
    for start in range(0, n, max_batch):
        size = min(max_batch, n - start)
        padded = [
            None
            if a is None
            else np.pad(a[start : start + size], [(0, bucket - size)] + [(0, 0)] * (a.ndim - 1))
            for a in arrays
        ]
        chunks.append([np.asarray(out)[:size] for out in jax.device_get(fn(*padded))])
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


class SamPredictor:
    """SAM on one image at a time: `set_image` encodes it, `predict` answers prompts against it.

    As the official ``SamPredictor``: prompts and masks are in the original image's pixels,
    points ``(x, y)``, boxes ``x0, y0, x1, y1``; masks are logits above 0.

        predictor = SamPredictor.from_pretrained("sam_vit_b")  # or SamPredictor(config, params)
        predictor.set_image(image)                             # (H, W, 3) uint8
        masks, scores, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])

    Attributes:
      config: the model's `SamConfig`.
      model: the `Sam` module.
      params: its parameters (plain SAM, or SAM with its trained PEFT layers and gates).
      max_prompt_batch: prompts decoded per jitted call (see `map_in_buckets`).
      is_image_set: whether `set_image` has run since construction or `reset_image`.
      original_size: ``(H, W)`` of the image set, else None.
      input_size: ``(H', W')`` of it resized for the model (longest side ``config.image_size``).
    """

    def __init__(self, config: SamConfig, params, *, max_prompt_batch: int = 64):
        if max_prompt_batch < 1:
            raise ValueError(f"max_prompt_batch must be positive, got {max_prompt_batch}")
        self.config = config
        self.model = Sam(config)
        self.params = jax.device_put(params)
        self.max_prompt_batch = max_prompt_batch
        self.reset_image()

    @classmethod
    def from_pretrained(cls, path, step=None, **kwargs) -> "SamPredictor":
        """A predictor for the model `mopeft_jax.load_pretrained(path, step)` reads: a converted
        SAM, a training run's folder (SAM and its trained PEFT layers and gates), or a step."""
        # mopeft_jax imports this module; its load_pretrained is looked up when first needed.
        from mopeft_jax import load_pretrained  # pylint: disable=g-import-not-at-top

        config, params = load_pretrained(path, step=step)
        return cls(config, params, **kwargs)

    def reset_image(self) -> None:
        """Forgets the image set (and its embedding)."""
        self.is_image_set = False
        self._embedding = None
        self.original_size = None
        self.input_size = None

    def set_image(self, image, image_format: str = "RGB") -> None:
        """Encodes `image` and keeps its embedding for the prompts that follow.

        Args:
          image: ``(H, W, 3)`` uint8, any size; grayscale ``(H, W)`` / ``(H, W, 1)`` and RGBA
            ``(H, W, 4)`` are converted, other dtypes only when they hold 8-bit values
            (`mopeft_jax.preprocessing.to_rgb`).
          image_format: "RGB" or "BGR" (the channel order of `image`).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = to_rgb(image)
        if image_format == "BGR":
            image = image[..., ::-1]
        cfg = self.config
        pixels, input_size = preprocess_image(image, cfg.image_size, cfg.pixel_mean, cfg.pixel_std)
        self.reset_image()
        self._embedding = _encode(self.model, self.params, pixels[None])
        self.original_size = tuple(image.shape[:2])
        self.input_size = tuple(input_size)
        self.is_image_set = True

    def get_image_embedding(self) -> jax.Array:
        """The embedding of the image set, ``(1, h, w, D)`` (NHWC, unlike the official NCHW)."""
        self._check_image_set()
        return self._embedding

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, in the original image's frame.

        Args:
          point_coords: ``(N, 2)`` points ``(x, y)`` in pixels of the original image.
          point_labels: ``(N,)``: 1 foreground, 0 background (-1: a point to ignore).
          box: ``(4,)`` (or ``(1, 4)``) box ``x0, y0, x1, y1`` in pixels of the original image.
          mask_input: ``(1, 4h, 4w)`` low-res logits, e.g. ``low_res_logits[best][None]`` of a
            previous call.
          multimask_output: the M = 3 ambiguity-aware masks if True, else one mask (M = 1).
          return_logits: the masks' logits instead of booleans.

        With no prompt at all, SAM decodes with only its no-mask embedding (as the official).

        Returns:
          ``(masks, scores, low_res_logits)``: ``(M, H, W)`` bool (float32 with `return_logits`),
          ``(M,)`` predicted IoUs and ``(M, 4h, 4w)`` float32 logits.
        """
        prompts = _check_prompts(
            point_coords, point_labels, box, mask_input, self.config.low_res_mask_size, False
        )
        outputs = self._predict_checked(*prompts, multimask_output, return_logits)
        return tuple(x[0] for x in outputs)

    def predict_batch(
        self,
        point_coords=None,
        point_labels=None,
        boxes=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for B prompt sets at once (e.g. many boxes), in the original image's frame.

        The official ``predict_torch``, except that prompts are in the original image's pixels
        (no ``apply_coords`` first) and numpy.

        Args:
          point_coords: ``(B, N, 2)`` points ``(x, y)``.
          point_labels: ``(B, N)``.
          boxes: ``(B, 4)`` as ``x0, y0, x1, y1``.
          mask_input: ``(B, 1, 4h, 4w)`` low-res logits.
          multimask_output, return_logits: as `predict`.

        Returns:
          ``(masks, scores, low_res_logits)``: ``(B, M, H, W)``, ``(B, M)``, ``(B, M, 4h, 4w)``;
          B = 0 gives empty arrays, no prompt at all B = 1.
        """
        prompts = _check_prompts(
            point_coords, point_labels, boxes, mask_input, self.config.low_res_mask_size, True
        )
        return self._predict_checked(*prompts, multimask_output, return_logits)

    def _predict_checked(self, coords, labels, boxes, masks, multimask_output, return_logits):
        """`predict_batch` of checked, batched prompts in the original image's frame."""
        self._check_image_set()
        size = self.config.image_size
        coords = None if coords is None else apply_coords(coords, self.original_size, size)
        boxes = None if boxes is None else apply_boxes(boxes, self.original_size, size)
        return self.predict_in_input_frame(
            coords, labels, boxes, masks, multimask_output, return_logits
        )

    def predict_in_input_frame(
        self,
        point_coords: Optional[np.ndarray],
        point_labels: Optional[np.ndarray],
        boxes: Optional[np.ndarray],
        mask_input: Optional[np.ndarray],
        multimask_output: bool = True,
        return_logits: bool = False,
        postprocess: Optional[Callable[[jax.Array], Tuple[jax.Array, ...]]] = None,
    ) -> Tuple[np.ndarray, ...]:
        """`predict_batch` for checked prompts already in the model's input frame.

        Coordinates as `mopeft_jax.preprocessing.apply_coords` / `apply_boxes` give them.
        `postprocess`, if given, replaces the upscaling: a jitted function of the low-res logits
        ``(B, M, 4h, 4w)`` whose outputs are returned in place of the masks, each with the
        leading batch axis (the automatic mask generator computes its mask scores so).

        Returns:
          ``(*postprocess(low_res) or masks, scores, low_res_logits)`` as numpy.
        """
        self._check_image_set()
        if postprocess is None:
            sizes = dict(
                input_size=self.input_size,
                original_size=self.original_size,
                image_size=self.config.image_size,
                return_logits=return_logits,
            )
            postprocess = lambda low_res: (upscale_masks(low_res, **sizes),)
        if mask_input is not None:
            mask_input = np.moveaxis(mask_input, 1, -1)  # (B, 1, h, w) -> NHWC (B, h, w, 1)

        def decode(coords, labels, boxes, masks):
            low_res, scores = _decode(
                self.model, self.params, self._embedding, coords, labels, boxes, masks,
                multimask_output=multimask_output,
            )  # fmt: skip
            return (*postprocess(low_res), scores, low_res)

        prompts = (point_coords, point_labels, boxes, mask_input)
        if all(p is None for p in prompts):
            return tuple(np.asarray(x) for x in jax.device_get(decode(*prompts)))
        if len(next(p for p in prompts if p is not None)) == 0:
            return self._empty_outputs(postprocess, multimask_output)
        return map_in_buckets(decode, prompts, self.max_prompt_batch)

    def _empty_outputs(self, postprocess, multimask_output: bool) -> Tuple[np.ndarray, ...]:
        """The outputs of zero prompt sets, shaped like those of one."""
        m = self.config.num_multimask_outputs if multimask_output else 1
        low = self.config.low_res_mask_size
        low_res = jax.ShapeDtypeStruct((0, m, low, low), jnp.float32)
        shapes = jax.eval_shape(postprocess, low_res)
        empty = [np.zeros(s.shape, s.dtype) for s in shapes]
        return (*empty, np.zeros((0, m), np.float32), np.zeros(low_res.shape, np.float32))

    def _check_image_set(self) -> None:
        if not self.is_image_set:
            raise ValueError(
                "No image is set: call predictor.set_image(image) before predicting masks."
            )


def _check_prompts(coords, labels, boxes, masks, low_res_size: int, batched: bool):
    """Prompts as batched float32/int32 numpy arrays, or one ValueError naming what is wrong.

    `batched`: the prompts of `predict_batch` (a leading axis B); else those of `predict`, which
    get a batch axis of 1. Messages name the arguments and shapes as the caller wrote them.
    """
    names = ("point_coords", "point_labels", "boxes" if batched else "box", "mask_input")
    n_coords, n_labels, n_boxes, n_masks = names
    b = "B, " if batched else ""
    if (coords is None) != (labels is None):
        raise ValueError(
            f"{n_coords} and {n_labels} must be given together: one label per point, "
            "1 for foreground, 0 for background."
        )
    low = low_res_size
    expected = {
        n_coords: (
            coords,
            f"({b}N, 2) points (x, y)",
            lambda s: len(s) == 2 + batched and s[-1] == 2,
        ),
        n_labels: (labels, f"({b}N) labels", lambda s: len(s) == 1 + batched),
        n_boxes: (
            boxes,
            "(B, 4) as x0, y0, x1, y1" if batched else "(4) or (1, 4) as x0, y0, x1, y1",
            lambda s: s[-1:] == (4,) and (len(s) == 2 if batched else s in ((4,), (1, 4))),
        ),
        n_masks: (
            masks,
            f"({b}1, {low}, {low}) low-res logits, as predict returns them",
            lambda s: len(s) == 3 + batched and s[-3:] == (1, low, low),
        ),
    }
    arrays = []
    for name, (x, what, fits) in expected.items():
        if x is None:
            arrays.append(None)
            continue
        x = np.asarray(x)
        if not fits(x.shape):
            raise ValueError(f"{name} must be {what}; got shape {x.shape}.")
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be finite numbers; got {_first_bad(x)}.")
        if not batched:  # one prompt set; a box may come as (1, 4), as the official allows
            x = x.reshape(1, 4) if name == n_boxes else x[None]
        arrays.append(x)
    coords, labels, boxes, masks = arrays
    sizes = {}
    lead = 0 if batched else 1  # the batch axis added to the caller's arrays
    if coords is not None:
        if labels.shape != coords.shape[:2]:
            raise ValueError(
                f"{n_labels} must hold one label per point: {n_coords} has shape "
                f"{coords.shape[lead:]}, {n_labels} {labels.shape[lead:]}."
            )
        if not np.all(np.isin(labels, (-1, 0, 1))):
            bad = sorted(set(np.unique(labels).tolist()) - {-1, 0, 1})
            raise ValueError(
                f"{n_labels} must be 1 (foreground), 0 (background) or -1 (ignored); got {bad}."
            )
        coords, labels = coords.astype(np.float32), labels.astype(np.int32)
        sizes[n_coords] = len(coords)
    if boxes is not None:
        flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if np.any(flipped):
            raise ValueError(
                f"{n_boxes} must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0; got "
                f"{boxes[flipped][0].tolist()}."
            )
        boxes = boxes.astype(np.float32)
        sizes[n_boxes] = len(boxes)
    if masks is not None:
        masks = masks.astype(np.float32)
        sizes[n_masks] = len(masks)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"The prompts disagree on the number of prompt sets B: {sizes}.")
    return coords, labels, boxes, masks


def _first_bad(x: np.ndarray) -> str:
    """The first value of `x` that is not a finite number, for an error message."""
    if not np.issubdtype(x.dtype, np.number):
        return f"dtype {x.dtype}"
    index = np.argwhere(~np.isfinite(x))[0]
    return f"{x[tuple(index)]} at index {index.tolist()}"
