"""The Segment Anything Model as one `flax.linen` Module."""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.image_encoder import ImageEncoderViT
from mopeft_jax.sam.mask_decoder import MaskDecoder
from mopeft_jax.sam.prompt_encoder import PromptEncoder


def _in_matmul_precision(method):
    """Runs a `Sam` method with `config.precision` as JAX's default matmul precision.

    JAX fixes the precision of every matmul and convolution when it traces them, so this
    holds inside `jax.jit`, and in the backward pass: `jax.grad` transposes each op with
    the precision it was traced with. Custom VJPs' backward functions (the chunked
    attention kernel's) are traced after the method returns and keep JAX's default.
    """

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with jax.default_matmul_precision(self.config.precision):
            return method(self, *args, **kwargs)

    return wrapped


class Sam(nn.Module):
    """SAM: image encoder, prompt encoder and mask decoder.

    Parameters live under `image_encoder`, `prompt_encoder` and `mask_decoder`, with
    the official PyTorch module names below them (`image_encoder/blocks_0/attn/qkv`).

    Typical use encodes an image once and decodes many prompts against it:

        model = Sam(config)
        emb = model.apply({"params": params}, images, method=Sam.encode_image)
        masks, iou = model.apply({"params": params}, emb, boxes=boxes, method=Sam.decode)
    """

    config: SamConfig

    def setup(self):
        self.image_encoder = ImageEncoderViT(self.config)
        self.prompt_encoder = PromptEncoder(self.config)
        self.mask_decoder = MaskDecoder(self.config)

    @_in_matmul_precision
    def encode_image(self, images: jax.Array) -> jax.Array:
        """Normalised, padded images (B, S, S, 3) -> image embeddings (B, S/p, S/p, D)."""
        return self.image_encoder(images)

    @_in_matmul_precision
    def decode(
        self,
        image_embeddings: jax.Array,
        point_coords: Optional[jax.Array] = None,
        point_labels: Optional[jax.Array] = None,
        boxes: Optional[jax.Array] = None,
        mask_inputs: Optional[jax.Array] = None,
        multimask_output: bool = True,
    ) -> Tuple[jax.Array, jax.Array]:
        """Masks for B prompt sets.

        Args:
          image_embeddings: (B, h, w, D), or (1, h, w, D) shared by all B prompt sets
            (many prompts for one image without re-running the encoder).
          point_coords: (B, N, 2) as (x, y) pixels of the padded input frame.
          point_labels: (B, N): 1 foreground, 0 background, -1 padding.
          boxes: (B, 4) as x0, y0, x1, y1 in input-frame pixels.
          mask_inputs: (B, 4h, 4w, 1) low-res mask logits, e.g. a previous prediction.
          multimask_output: the three ambiguity-aware masks if True, else the single mask.

        Returns:
          Low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M), M = 3 or 1; with
          B = 0 (prompt arrays with no rows), empty arrays of those shapes.
        """
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together.")
        batch_size = _prompt_batch_size(
            image_embeddings, point_coords, point_labels, boxes, mask_inputs
        )
        if batch_size == 0:  # no prompt set (an image without segments): empty outputs
            _, h, w, _ = image_embeddings.shape
            outputs = self.config.num_multimask_outputs if multimask_output else 1
            dtype = jnp.dtype(self.config.dtype)
            return jnp.zeros((0, outputs, 4 * h, 4 * w), dtype), jnp.zeros((0, outputs), dtype)
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(batch_size, points, boxes, mask_inputs)
        return self.mask_decoder(
            image_embeddings, self.prompt_encoder.dense_pe(), sparse, dense, multimask_output
        )

    def __call__(
        self,
        images: jax.Array,
        point_coords: Optional[jax.Array] = None,
        point_labels: Optional[jax.Array] = None,
        boxes: Optional[jax.Array] = None,
        mask_inputs: Optional[jax.Array] = None,
        multimask_output: bool = True,
    ) -> Tuple[jax.Array, jax.Array]:
        """`encode_image` then `decode`, one prompt set per image: (B, S, S, 3) -> masks, IoU."""
        return self.decode(
            self.encode_image(images),
            point_coords,
            point_labels,
            boxes,
            mask_inputs,
            multimask_output,
        )

    def init_params(self, rng: jax.Array, pretrained: Optional[dict] = None) -> dict:
        """Params of every submodule, random or taken from `pretrained` where it has them.

        `pretrained` is a plain SAM param tree (e.g. from `load_pretrained`): it loads
        unchanged into a model with PEFT layers, which keep their own init (the same
        values as in a fully random init from `rng`). Only the leaves `pretrained` lacks
        are drawn. Wrap in `jax.eval_shape` for shapes only.
        """
        if pretrained is None:
            return flax.traverse_util.unflatten_dict(_random_params(self, None)(rng))
        shapes = flax.traverse_util.flatten_dict(jax.eval_shape(self.init_params, rng))
        given = flax.traverse_util.flatten_dict(pretrained)
        # Drawing only the missing leaves keeps XLA from compiling every initializer of
        # the model, which on a CPU takes longer than a short fine-tuning run.
        missing = frozenset(path for path in shapes if path not in given)
        fresh = {**shapes, **_random_params(self, missing)(rng)}
        return overlay_params(flax.traverse_util.unflatten_dict(fresh), pretrained)

    def _with_every_prompt(self, images: jax.Array, mask_inputs: jax.Array):
        """Runs every submodule once: points, boxes and a mask prompt, and no mask prompt."""
        embeddings = self.encode_image(images)
        points = jnp.zeros((1, 1, 2), jnp.float32), jnp.ones((1, 1), jnp.int32)
        boxes = jnp.zeros((1, 4), jnp.float32)
        return (
            self.decode(embeddings, *points, boxes, mask_inputs),
            self.decode(embeddings, *points, boxes),
        )


def _prompt_batch_size(image_embeddings, point_coords, point_labels, boxes, mask_inputs) -> int:
    """The number B of prompt sets, checking that every prompt agrees on it."""
    shapes = {
        "point_coords": (point_coords, 3, 2),
        "point_labels": (point_labels, 2, None),
        "boxes": (boxes, 2, 4),
        "mask_inputs": (mask_inputs, 4, 1),
    }
    sizes = {}
    for name, (x, ndim, last) in shapes.items():
        if x is None:
            continue
        if x.ndim != ndim or (last is not None and x.shape[-1] != last):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected {ndim} axes"
                + (f" ending in {last}" if last else "")
                + " with a leading batch axis B."
            )
        sizes[name] = x.shape[0]
    if point_coords is not None and point_coords.shape[:2] != point_labels.shape:
        raise ValueError(
            f"point_coords {tuple(point_coords.shape)} and point_labels "
            f"{tuple(point_labels.shape)} disagree on (B, N)."
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Prompts disagree on the batch size B: {sizes}.")
    batch = next(iter(sizes.values()), image_embeddings.shape[0])
    if image_embeddings.shape[0] not in (1, batch):
        raise ValueError(
            f"image_embeddings has batch {image_embeddings.shape[0]} but the prompts "
            f"have B={batch}; pass one embedding per prompt set or a single shared one."
        )
    return batch


@functools.lru_cache(maxsize=32)
def _random_params(model: Sam, paths: Optional[frozenset]):
    """A jitted rng -> {path: value} of `model`'s random init, of `paths` only if given."""

    def init(rng):
        cfg = model.config
        size, low_res = cfg.image_size, cfg.low_res_mask_size
        images = jnp.zeros((1, size, size, 3), jnp.float32)
        masks = jnp.zeros((1, low_res, low_res, 1), jnp.float32)
        params = model.init(rng, images, masks, method=Sam._with_every_prompt)["params"]
        flat = flax.traverse_util.flatten_dict(params)
        return flat if paths is None else {path: flat[path] for path in paths}

    # XLA:CPU's optimizing backend spends most of this compile on the initializers' threefry
    # and erf_inv code, which then runs once: the tiny SAM's init compiles in 8.5 s instead
    # of 16.5 s without it, with values that differ by at most an ulp in 4% of the leaves.
    # (Compiler options are for a top-level jit only; under eval_shape or an outer jit, the
    # plain function is traced.)
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    jitted = jax.jit(init, compiler_options=options)
    return lambda rng: init(rng) if isinstance(rng, jax.core.Tracer) else jitted(rng)


def overlay_params(fresh: dict, pretrained: dict) -> dict:
    """`fresh` with every leaf that `pretrained` has replaced by it (shapes must agree)."""
    flat = flax.traverse_util.flatten_dict(fresh)
    problems = []
    for path, value in flax.traverse_util.flatten_dict(pretrained).items():
        name = "/".join(path)
        if path not in flat:
            problems.append(f"{name} is not a parameter of this model")
        elif tuple(flat[path].shape) != tuple(value.shape):
            problems.append(
                f"{name} has shape {tuple(value.shape)}, the model {tuple(flat[path].shape)}"
            )
        else:
            flat[path] = jnp.asarray(value, flat[path].dtype)
    if problems:
        raise ValueError("The pretrained params do not fit this model: " + "; ".join(problems[:20]))
    return flax.traverse_util.unflatten_dict(flat)
