"""UniPELT gates: how strongly each PEFT submodule acts, one scalar per example.

    G = mean over tokens of sigmoid(Dense_{C->1}(u)),

u being the input of the submodule the gate controls. The softmax router (an
ablation) instead turns one Dense_{C->S} into weights over a block's S gated
submodules that sum to one per token, then averages over tokens.
"""

from __future__ import annotations

from typing import Dict, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.peft import names as peft_names

gate_init = nn.initializers.normal(0.02)


def _at_least_float32(x: jax.Array) -> jax.Array:
    """Gates are computed in float32 (or wider) whatever the compute dtype."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mean_over_tokens(x: jax.Array) -> jax.Array:
    """(B, ..., S) -> (B, S): the mean over every axis between batch and the last."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1)


class Gate(nn.Module):
    """Tokens (B, ..., C) -> gate value (B,) in (0, 1), also sown as "gates"/"value"."""

    @nn.compact
    def __call__(self, u: jax.Array) -> jax.Array:
        logits = nn.Dense(1, kernel_init=gate_init, name="dense")(_at_least_float32(u))
        value = _mean_over_tokens(jax.nn.sigmoid(logits))[:, 0]
        self.sow("gates", "value", value)
        return value


class Router(nn.Module):
    """Tokens (B, ..., C) -> weights (B, len(names)), each row summing to one.

    Each expert's weight (B,) is also sown as "gates"/<name>.
    """

    names: Tuple[str, ...]

    @nn.compact
    def __call__(self, u: jax.Array) -> jax.Array:
        logits = nn.Dense(len(self.names), kernel_init=gate_init, name="dense")(
            _at_least_float32(u)
        )
        weights = _mean_over_tokens(jax.nn.softmax(logits, axis=-1))
        for i, name in enumerate(self.names):
            self.sow("gates", name, weights[:, i])
        return weights


def block_gate_names(peft) -> tuple:
    """Names of the gated submodules of one encoder block, in a fixed order."""
    if not peft.gated:
        return ()
    names = ()
    if peft.lora:
        names += peft_names.LORA_LAYERS
    if peft.prefix:
        names += peft_names.PREFIX_KV if peft.separate_prefix_gates else (peft_names.PREFIX,)
    if peft.adapter:
        names += (peft_names.ADAPTER,)
    return names


def gate_values(gates: dict) -> Dict[str, jax.Array]:
    """The "gates" collection of a forward pass -> {"blocks_3/lora_q": (B,), ...}.

    `gates` is what `model.apply(..., mutable=["gates"])` returns under "gates"
    (with or without that key); paths are relative to the image encoder.
    """
    gates = gates.get("gates", gates)
    gates = gates.get("image_encoder", gates)
    out = {}
    for path, value in flax.traverse_util.flatten_dict(gates).items():
        value = value[0] if isinstance(value, tuple) else value
        *scope, leaf = path
        name = scope[-1][len(peft_names.GATE_PREFIX) :] if leaf == "value" else leaf
        out["/".join([*scope[:-1], name])] = value
    return out
