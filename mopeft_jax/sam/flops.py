"""SAM's matmul FLOPs, counted from its shapes (2 FLOPs per multiply-add).

For model FLOP utilisation (MFU) on accelerators: XLA's GPU cost analysis does not count the
library calls (cuBLAS, cuDNN) that do nearly all of the work, so it reports a fraction of
the real count. These counts take every matmul and convolution of the forward pass (the
attention's projections on the window-padded tokens, its two matmuls, the decomposed
rel-pos bias, the MLPs, the patch embedding and the neck; in the decoder the two-way
transformer, the upscaling, the hypernetwork and IoU heads and the positional encodings)
and leave out the elementwise work (norms, softmax, GELU), which is a few percent.
"""

from __future__ import annotations

import math

from mopeft_jax.sam.config import SamConfig


def encoder_flops(config: SamConfig) -> float:
    """FLOPs of the image encoder on one image."""
    dim, grid = config.encoder_embed_dim, config.embedding_size
    tokens = grid * grid
    mlp = int(dim * config.mlp_ratio)
    macs = tokens * config.patch_size**2 * 3 * dim  # patch embedding
    for i in range(config.encoder_depth):
        windowed = config.window_size > 0 and i not in config.encoder_global_attn_indexes
        if windowed:
            side = config.window_size
            attended = (math.ceil(grid / side) * side) ** 2  # the padded grid
        else:
            side, attended = grid, tokens
        keys = side * side
        macs += attended * 4 * dim * dim  # qkv and the output projection
        macs += attended * keys * dim * 2  # q.k and probabilities.v, over every head
        macs += attended * 2 * side * dim  # rel-pos bias: q against the row and column tables
        macs += tokens * 2 * dim * mlp
    out = config.prompt_embed_dim
    macs += tokens * (dim * out + 9 * out * out)  # neck: 1x1 and 3x3 convolutions
    return 2.0 * macs


def decoder_flops(config: SamConfig, num_prompts: int, points_per_prompt: int = 2) -> float:
    """FLOPs of the prompt encoder and mask decoder for `num_prompts` prompt sets against one
    image embedding (all mask outputs; a box is 2 points).

    Args:
      config: the model.
      num_prompts: prompt sets B.
      points_per_prompt: sparse prompt points per set (2 for a box).
    """
    dim, grid = config.prompt_embed_dim, config.embedding_size
    pixels = grid * grid
    internal = dim // config.attention_downsample_rate
    masks = config.num_multimask_outputs + 1
    tokens = 1 + masks + points_per_prompt

    def attention(queries: int, keys: int, width: int) -> int:
        return (
            (queries + 2 * keys) * dim * width + 2 * queries * keys * width + queries * width * dim
        )

    block = (
        attention(tokens, tokens, dim)  # tokens' self-attention
        + attention(tokens, pixels, internal)  # tokens to image
        + tokens * 2 * dim * config.decoder_mlp_dim
        + attention(pixels, tokens, internal)  # image to tokens
    )
    per_prompt = config.decoder_depth * block + attention(tokens, pixels, internal)
    per_prompt += pixels * 4 * dim * (dim // 4) + 4 * pixels * 4 * (dim // 4) * (dim // 8)
    per_prompt += masks * (2 * dim * dim + dim * dim // 8)  # hypernetwork MLPs
    per_prompt += masks * 16 * pixels * (dim // 8)  # masks from the upscaled embedding
    hidden = config.iou_head_hidden_dim
    per_prompt += dim * hidden + (config.iou_head_depth - 2) * hidden * hidden + hidden * masks
    per_prompt += points_per_prompt * dim  # positional encoding of the points (2 -> dim / 2)
    grid_encoding = pixels * dim  # of the embedding grid, once
    return 2.0 * (num_prompts * per_prompt + grid_encoding)


def train_step_flops(
    config: SamConfig, num_prompts: int, encoder_weights: bool, decoder_weights: bool
) -> float:
    """FLOPs of a train step on one image with `num_prompts` box prompts: each part's forward
    once, its input gradients once, and its weight gradients once more where they train.

    `encoder_weights`: the encoder's own weights train (full fine-tuning); the PEFT layers'
    gradients are a few percent and left out. `decoder_weights`: the decoder's weights train.
    """
    encoder = encoder_flops(config) * (3 if encoder_weights else 2)
    decoder = decoder_flops(config, num_prompts) * (3 if decoder_weights else 2)
    return encoder + decoder
