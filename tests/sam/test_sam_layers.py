"""mopeft_jax.sam.layers: the building blocks behave as their PyTorch namesakes."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from mopeft_jax.sam.layers import gelu


def test_gelu_is_torch_exact_gelu():
    x = np.linspace(-8, 8, 1001, dtype=np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), expected, atol=1e-6)


def test_gelu_gradient_matches_autodiff_of_exact_gelu():
    x = jnp.linspace(-8, 8, 1001, dtype=jnp.float32)
    weights = jnp.cos(x)  # a cotangent that is not all ones
    ours = jax.grad(lambda v: jnp.sum(gelu(v) * weights))(x)
    reference = jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=False) * weights))(x)
    assert ours.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), atol=1e-6)


def test_gelu_gradient_in_bfloat16_keeps_dtype():
    x = jnp.linspace(-4, 4, 64, dtype=jnp.bfloat16)
    grad = jax.grad(lambda v: jnp.sum(gelu(v).astype(jnp.float32)))(x)
    reference = jax.grad(lambda v: jnp.sum(jax.nn.gelu(v.astype(jnp.float32), approximate=False)))(
        x.astype(jnp.float32)
    )
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(reference), atol=1e-2)
