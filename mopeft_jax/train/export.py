"""Turning trained PEFT params into plain ones for deployment."""

from __future__ import annotations

from typing import Any, Tuple

import flax
import jax.numpy as jnp

from mopeft_jax.sam.config import SamConfig

Params = Any


def merge_lora(params: Params, config: SamConfig) -> Tuple[Params, SamConfig]:
    """Folds ungated LoRA into the fused qkv weights.

    qkv(x) + (alpha / r) * B(A(x)) on the q and v slices equals a Dense whose kernel
    has (alpha / r) * A @ B added to those slices, so the LoRA layers disappear.
    Other PEFT layers stay. Returns (params, config) with LoRA switched off; with no
    other PEFT layer left, that is a plain SAM param tree and `peft=None`.

    Raises:
      ValueError: no LoRA to merge, or gated LoRA (its scale depends on the input).
    """
    peft = config.peft
    if peft is None or not peft.lora:
        raise ValueError("The config has no LoRA to merge.")
    if peft.gated:
        raise ValueError(
            "Gated LoRA cannot be merged into the weights: its gate depends on the input. "
            "Only ungated LoRA (the `lora` preset) can be exported as plain SAM weights."
        )
    scale = peft.lora_alpha / peft.lora_rank
    c = config.encoder_embed_dim
    flat = dict(flax.traverse_util.flatten_dict(params))
    for i in range(config.encoder_depth):
        block = ("image_encoder", f"blocks_{i}")
        kernel = flat[(*block, "attn", "qkv", "kernel")]
        for offset, target in ((0, "q"), (2 * c, "v")):
            a = flat.pop((*block, f"lora_{target}", "lora_a", "kernel"))
            b = flat.pop((*block, f"lora_{target}", "lora_b", "kernel"))
            kernel = kernel.at[:, offset : offset + c].add(scale * (a @ b))
        flat[(*block, "attn", "qkv", "kernel")] = jnp.asarray(kernel)
    remaining = peft.replace(lora=False)
    merged_config = config.replace(peft=remaining if remaining.has_layers else None)
    return flax.traverse_util.unflatten_dict(flat), merged_config


def fold_prefix(params: Params, config: SamConfig) -> Tuple[Params, SamConfig]:
    """Replaces the reparameterised prefix (embedding + MLP) by the flat prefixes it makes.

    Training needs the MLP; inference only its output (depth, 2, L, C), so the folded
    model computes the same function with fewer parameters.
    """
    peft = config.peft
    if peft is None or not peft.prefix or not peft.prefix_reparam:
        raise ValueError("The config has no reparameterised prefix to fold.")
    from mopeft_jax.peft.layers import PrefixEncoder  # pylint: disable=g-import-not-at-top

    encoder = PrefixEncoder(
        config.encoder_depth,
        peft.prefix_length,
        config.encoder_embed_dim,
        reparam=True,
        hidden=peft.prefix_hidden,
    )
    prefixes = encoder.apply({"params": params["image_encoder"]["prefix"]})
    image_encoder = dict(params["image_encoder"], prefix={"prefix": prefixes})
    return dict(params, image_encoder=image_encoder), config.replace(
        peft=peft.replace(prefix_reparam=False)
    )
