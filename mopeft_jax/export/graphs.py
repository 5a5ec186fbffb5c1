"""The pure functions that the exports serialise: SAM's image encoder and its prompt decoder.

Both take their weights as an argument, a flat dict keyed by the '/'-joined parameter path
(`"image_encoder/blocks_0/attn/qkv/kernel"`), so that a serialised graph carries no weights
and one file of weights serves every platform it was exported for.

The prompt decoder (prompt encoder + mask decoder) takes its prompts as the official
`segment_anything.utils.onnx.SamOnnxModel` does, which puts every kind of prompt into fixed
inputs:
  point_coords (B, N, 2)  float32, (x, y) pixels of the padded input frame;
  point_labels (B, N)     1 foreground point, 0 background point, 2 top-left and 3 bottom-right
                          box corner, -1 padding;
  mask_input (B, 4h, 4w, 1) float32 low-res mask logits, used where has_mask_input (B,) is 1.
Unlike `Sam.decode`, no padding point is appended: prompts without a box need one point
(0, 0) with label -1 at the end, as the official predictor adds it (`point_prompts` builds
them).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam

ENCODER_PARAMS = ("image_encoder",)
DECODER_PARAMS = ("prompt_encoder", "mask_decoder")
BOX_LABELS = (2, 3)  # SamOnnxModel's labels of the top-left and bottom-right box corners

FlatParams = Dict[str, Any]


def flat_params(params: Any, roots: Sequence[str]) -> FlatParams:
    """The leaves under the top-level modules `roots`, keyed by their '/'-joined path."""
    return {
        "/".join(path): value
        for path, value in flax.traverse_util.flatten_dict(params).items()
        if path[0] in roots
    }


def _nested(flat: FlatParams) -> Any:
    return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def image_encoder_graph(config: SamConfig) -> Callable[[FlatParams, jax.Array], jax.Array]:
    """`(params, images) -> embeddings`: `Sam.encode_image`, (B, S, S, 3) -> (B, h, w, D)."""
    model = Sam(config)

    def encode(params: FlatParams, images: jax.Array) -> jax.Array:
        return model.apply({"params": _nested(params)}, images, method=Sam.encode_image)

    return encode


def _decode_prompts(
    sam: Sam,
    image_embeddings: jax.Array,
    point_coords: jax.Array,
    point_labels: jax.Array,
    mask_input: jax.Array,
    has_mask_input: jax.Array,
    multimask_output: bool,
) -> Tuple[jax.Array, jax.Array]:
    """SamOnnxModel's prompt embedding with our prompt encoder, then the mask decoder."""
    prompts = sam.prompt_encoder
    labels = point_labels.astype(jnp.int32)
    # Labels -1, 0 and 1 are `embed_points`' own; box corners add their corner embeddings.
    sparse = prompts.embed_points(point_coords, labels, pad=False)
    for label in BOX_LABELS:
        corner = prompts.point_embeddings[label]()
        sparse = sparse + jnp.where(labels[..., None] == label, corner, 0.0)
    has_mask = has_mask_input.astype(jnp.float32)[:, None, None, None]
    dense = has_mask * prompts.embed_masks(mask_input) + (1 - has_mask) * prompts.no_mask_embed()[0]
    return sam.mask_decoder(
        image_embeddings, prompts.dense_pe(), sparse, dense.astype(sparse.dtype), multimask_output
    )


def prompt_decoder_graph(
    config: SamConfig, multimask_output: bool = True
) -> Callable[..., Tuple[jax.Array, jax.Array]]:
    """`(params, image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
    -> (masks, iou_predictions)`, with the prompts of the module docstring.

    image_embeddings (1, h, w, D) serve all B prompt sets (or pass B of them); masks are
    low-res logits (B, M, 4h, 4w) and iou_predictions (B, M), M = num_multimask_outputs if
    `multimask_output`, else 1 (the single-mask output), as `Sam.decode`.
    """
    # The decoder's sequences are short, and with a symbolic number of points the lengths
    # that `attention="auto"` chooses its kernel by are unknown: plain XLA attention.
    if config.attention == "auto":
        config = config.replace(attention="xla")
    model = Sam(config)

    def decode(
        params: FlatParams, image_embeddings, point_coords, point_labels, mask_input, has_mask_input
    ):
        return model.apply(
            {"params": _nested(params)},
            image_embeddings,
            point_coords,
            point_labels,
            mask_input,
            has_mask_input,
            multimask_output,
            method=_decode_prompts,
        )

    return decode


def point_prompts(
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    boxes: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """`Sam.decode`'s points (B, N, 2) with labels (B, N) and boxes (B, 4) as the prompt
    decoder's point_coords (B, N', 2) float32 and point_labels (B, N') int32.

    Box corners follow the points; without boxes a padding point ends every prompt set.
    """
    if points is None and boxes is None:
        raise ValueError("Give points (with labels), boxes, or both.")
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be given together.")
    coords, codes = [], []
    if points is not None:
        coords.append(np.asarray(points, np.float32))
        codes.append(np.asarray(labels, np.int32))
    batch = (coords[0] if coords else np.asarray(boxes)).shape[0]
    if boxes is not None:
        coords.append(np.asarray(boxes, np.float32).reshape(batch, 2, 2))
        codes.append(np.broadcast_to(np.asarray(BOX_LABELS, np.int32), (batch, 2)))
    else:
        coords.append(np.zeros((batch, 1, 2), np.float32))
        codes.append(np.full((batch, 1), -1, np.int32))
    return np.concatenate(coords, axis=1), np.concatenate(codes, axis=1)
