"""The PEFT layers: LoRA, bottleneck adapter, low-rank input expert, prefix encoder.

Generic `flax.linen` modules on (..., C) tokens; nothing here knows about SAM.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.row_dense import RowDense

Dtype = Any

# PyTorch's nn.Linear init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class LoRA(nn.Module):
    """Low-rank update B(A(x)): (..., C_in) -> (..., features); zero at init (B = 0)."""

    rank: int
    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = RowDense(
            self.rank,
            use_bias=False,
            kernel_init=torch_linear_init,
            dtype=self.dtype,
            name="lora_a",
        )(x)
        return RowDense(
            self.features,
            use_bias=False,
            kernel_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="lora_b",
        )(x)


class Bottleneck(nn.Module):
    """Up(act(Down(x))): (..., C) -> (..., C), the adapter and input-expert body.

    `zero_init` zeroes Up so the residual branch starts as a no-op; otherwise Up is
    normal(0.02), as UniPELT's adapters.
    """

    width: int
    activation: str = "relu"
    zero_init: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = {"relu": nn.relu, "gelu": lambda v: nn.gelu(v, approximate=False)}[self.activation]
        up_init = nn.initializers.zeros if self.zero_init else nn.initializers.normal(0.02)
        h = act(
            RowDense(self.width, kernel_init=torch_linear_init, dtype=self.dtype, name="down")(x)
        )
        return RowDense(x.shape[-1], kernel_init=up_init, dtype=self.dtype, name="up")(h)


class PrefixEncoder(nn.Module):
    """Key/value prefixes for every block: () -> (depth, 2, length, C).

    Reparameterised (UniPELT): an embedding (length, C) through one MLP shared by all
    blocks, C -> hidden -> tanh -> depth * 2 * C. Flat: one free tensor per block.
    """

    depth: int
    length: int
    features: int
    reparam: bool = True
    hidden: int = 512

    @nn.compact
    def __call__(self) -> jax.Array:
        shape = (self.depth, 2, self.length, self.features)
        if not self.reparam:
            return self.param("prefix", nn.initializers.normal(0.02), shape)
        embedding = self.param(
            "embedding", nn.initializers.normal(1.0), (self.length, self.features)
        )
        h = jnp.tanh(nn.Dense(self.hidden, kernel_init=torch_linear_init, name="mlp_0")(embedding))
        out = nn.Dense(self.depth * 2 * self.features, kernel_init=torch_linear_init, name="mlp_1")(
            h
        )  # (length, depth * 2 * C)
        return out.reshape(self.length, self.depth, 2, self.features).transpose(1, 2, 0, 3)
