"""The `SamConfig` of an official-layout state dict, read off its tensor shapes."""

from __future__ import annotations

import re

from mopeft_jax.sam.config import SamConfig
from weights_convert.errors import CheckpointError
from weights_convert.reading import StateDict


def _indices(state: StateDict, prefix: str) -> list:
    """Sorted distinct i of keys `prefix.{i}.…`."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _count(state: StateDict, prefix: str) -> int:
    """How many consecutive modules `prefix.0`, `prefix.1`, … the state dict has."""
    found = _indices(state, prefix)
    if found != list(range(len(found))):
        raise CheckpointError(f"The modules {prefix}.* are not numbered 0..n-1: found {found}.")
    return len(found)


def infer_config(state: StateDict, **overrides) -> SamConfig:
    """Infers the architecture from tensor shapes alone.

    Everything but `decoder_num_heads` (which leaves no trace in the shapes; 8 in
    every official model) follows from the tensors. `overrides` set any field.
    """

    def shape(key):
        if key not in state:
            raise CheckpointError(f"Not a SAM checkpoint: it has no tensor {key!r}.")
        return state[key].shape

    dim, _, patch, _ = shape("image_encoder.patch_embed.proj.weight")
    grid = shape("image_encoder.pos_embed")[1]
    depth = _count(state, "image_encoder.blocks")
    if depth == 0:
        raise CheckpointError("Not a SAM checkpoint: it has no image_encoder.blocks.* tensors.")
    global_blocks, window_sizes, head_dims = [], set(), set()
    for i in range(depth):
        length, head_dim = shape(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        head_dims.add(head_dim)
        if length == 2 * grid - 1:
            global_blocks.append(i)
        elif length % 2 == 1:
            window_sizes.add((length + 1) // 2)
        else:
            raise CheckpointError(
                f"image_encoder.blocks.{i}.attn.rel_pos_h has {length} rows, which fits neither "
                f"global attention over the {grid}x{grid} grid ({2 * grid - 1}) nor any window."
            )
    if len(head_dims) != 1 or len(window_sizes) > 1:
        raise CheckpointError(
            f"The encoder blocks disagree: rel-pos head widths {sorted(head_dims)}, "
            f"window sizes {sorted(window_sizes)}; SAM uses one of each."
        )
    head_dim = head_dims.pop()
    if dim % head_dim:
        raise CheckpointError(f"The rel-pos head width {head_dim} does not divide the width {dim}.")
    prompt_dim = shape("image_encoder.neck.0.weight")[0]
    fields = dict(
        encoder_embed_dim=dim,
        encoder_depth=depth,
        encoder_num_heads=dim // head_dim,
        encoder_global_attn_indexes=tuple(global_blocks),
        image_size=grid * patch,
        patch_size=patch,
        window_size=window_sizes.pop() if window_sizes else 0,
        mlp_ratio=shape("image_encoder.blocks.0.mlp.lin1.weight")[0] / dim,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=_count(state, "mask_decoder.transformer.layers"),
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        attention_downsample_rate=prompt_dim
        // shape("mask_decoder.transformer.final_attn_token_to_image.q_proj.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=_count(state, "mask_decoder.iou_prediction_head.layers"),
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
    )
    try:
        return SamConfig(**{**fields, **overrides})
    except ValueError as e:
        raise CheckpointError(f"The checkpoint's shapes give an invalid model: {e}") from None
