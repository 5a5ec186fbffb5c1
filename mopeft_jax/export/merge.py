"""Turning trained PEFT params into deployable ones: merge what is linear, fold what is fixed.

Every function takes and returns `(config, params)`, like `mopeft_jax.load_pretrained`, and the
returned pair computes the same function as the given one (up to float rounding).
"""

from __future__ import annotations

from typing import Any, Tuple

import flax
import jax.numpy as jnp

from mopeft_jax.peft.layers import PrefixEncoder
from mopeft_jax.peft.names import LORA_TARGETS, PREFIX, lora_name
from mopeft_jax.sam.config import SamConfig

Params = Any


def merge_lora(config: SamConfig, params: Params) -> Tuple[SamConfig, Params]:
    """Folds ungated LoRA into the fused qkv weights.

    qkv(x) + (alpha / r) * B(A(x)) on the q and v slices equals a Dense whose kernel
    has (alpha / r) * A @ B added to those slices, so the LoRA layers disappear.
    Other PEFT layers stay. Returns (config, params) with LoRA switched off; with no
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
        kernel = jnp.asarray(flat[(*block, "attn", "qkv", "kernel")])  # numpy params too
        # The fused qkv kernel's columns are [q | k | v], C each.
        for target in LORA_TARGETS:
            offset = "qkv".index(target) * c
            a = flat.pop((*block, lora_name(target), "lora_a", "kernel"))
            b = flat.pop((*block, lora_name(target), "lora_b", "kernel"))
            kernel = kernel.at[:, offset : offset + c].add(scale * (a @ b))
        flat[(*block, "attn", "qkv", "kernel")] = kernel
    remaining = peft.replace(lora=False)
    merged_config = config.replace(peft=remaining if remaining.has_layers else None)
    return merged_config, flax.traverse_util.unflatten_dict(flat)


def fold_prefix(config: SamConfig, params: Params) -> Tuple[SamConfig, Params]:
    """Replaces the reparameterised prefix (embedding + MLP) by the flat prefixes it makes.

    Training needs the MLP; inference only its output (depth, 2, L, C), so the folded
    model computes the same function with fewer parameters. Prefix gates act on that
    output, so a gated prefix folds too.

    Raises:
      ValueError: the config has no reparameterised prefix.
    """
    peft = config.peft
    if peft is None or not peft.prefix or not peft.prefix_reparam:
        raise ValueError("The config has no reparameterised prefix to fold.")
    encoder = PrefixEncoder(
        config.encoder_depth,
        peft.prefix_length,
        config.encoder_embed_dim,
        reparam=True,
        hidden=peft.prefix_hidden,
    )
    prefixes = encoder.apply({"params": params["image_encoder"][PREFIX]})
    image_encoder = dict(params["image_encoder"], **{PREFIX: {"prefix": prefixes}})
    folded_config = config.replace(peft=peft.replace(prefix_reparam=False))
    return folded_config, dict(params, image_encoder=image_encoder)


def prepare_for_export(config: SamConfig, params: Params) -> Tuple[SamConfig, Params]:
    """The leanest (config, params) that computes what `Sam(config)` with `params` computes.

    Ungated LoRA is merged into qkv (`merge_lora`) and a reparameterised prefix, gated or not,
    is folded into flat prefixes (`fold_prefix`). Everything else stays as it is: a gated
    mixture keeps its gates, its LoRA and its adapters, whose effect depends on the input, and
    ungated adapters and the input expert keep their nonlinear layers. Plain SAM params come
    back unchanged.
    """
    peft = config.peft
    if peft is not None and peft.lora and not peft.gated:
        config, params = merge_lora(config, params)
    peft = config.peft
    if peft is not None and peft.prefix and peft.prefix_reparam:
        config, params = fold_prefix(config, params)
    return config, params
