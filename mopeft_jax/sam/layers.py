"""Small building blocks shared by the SAM modules (names as in `segment_anything`)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.row_dense import RowDense

Dtype = Any


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU's exact (erf) GELU, x * Phi(x).

    Its VJP keeps only x and forms Phi(x) + x * phi(x) in the backward pass: by
    default JAX stores the derivative from the forward, and XLA CPU then evaluates
    erf in several fusions of a train step (the costliest elementwise op of ViT-B).
    """
    return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, d_out):
    stat = jnp.promote_types(x.dtype, jnp.float32)
    xs = x.astype(stat)
    cdf = 0.5 * jax.lax.erfc(-xs * (2**-0.5))
    pdf = jnp.exp(-0.5 * xs * xs) * (2 * jnp.pi) ** -0.5
    return ((d_out.astype(stat) * (cdf + xs * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def layer_norm(epsilon: float, dtype: Dtype, name=None) -> nn.LayerNorm:
    """LayerNorm over the last axis with PyTorch's two-pass variance.

    Flax's default E[x^2] - E[x]^2 loses precision when the channels are nearly
    equal, which the few-channel norms of the mask-prompt convs run into.
    """
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, use_fast_variance=False, name=name)


def layer_norm_2d(name, dtype: Dtype) -> nn.LayerNorm:
    """`segment_anything`'s LayerNorm2d: over channels, eps 1e-6; in NHWC a plain LayerNorm."""
    return layer_norm(1e-6, dtype, name)


class MLPBlock(nn.Module):
    """lin1 -> act -> lin2 on the last axis (..., C) -> (..., C)."""

    mlp_dim: int
    act: Callable[[jax.Array], jax.Array] = gelu
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        x = self.act(RowDense(self.mlp_dim, dtype=self.dtype, name="lin1")(x))
        return RowDense(features, dtype=self.dtype, name="lin2")(x)


class MLP(nn.Module):
    """`num_layers` Dense layers with ReLU between them: (..., C_in) -> (..., output_dim)."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            x = RowDense(
                self.output_dim if last else self.hidden_dim, dtype=self.dtype, name=f"layers_{i}"
            )(x)
            if not last:
                x = nn.relu(x)
        return x


class PatchConvTranspose(nn.Module):
    """`torch.nn.ConvTranspose2d(C_in, features, k, stride=k)`: each pixel becomes a k x k patch.

    (B, h, w, C_in) -> (B, k*h, k*w, features). The parameters are those of Flax's
    `nn.ConvTranspose(features, (k, k), strides=(k, k), transpose_kernel=True)`: `kernel`
    (k, k, features, C_in) and `bias` (features,), initialised alike.

    Computed as one matmul and a depth-to-space reshape. XLA's lhs-dilated convolution is
    slow on CPU in the backward pass: its kernel gradient contracts over the batch through
    transposed copies, 75 of the 360 ms of the tiny SAM's full fine-tuning step (4 x 8 prompts).
    """

    features: int
    patch: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        k = self.patch
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, self.features, c))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = jnp.einsum("bhwc,ijoc->bhiwjo", x.astype(self.dtype), kernel.astype(self.dtype))
        return y.reshape(b, h * k, w * k, self.features) + bias.astype(self.dtype)


class Embedding(nn.Module):
    """A learned table (num, C) returned whole, like `nn.Embedding(num, C).weight`."""

    num: int
    features: int

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("embedding", nn.initializers.normal(1.0), (self.num, self.features))
