"""mopeft_jax.sam.layers: the building blocks behave as their PyTorch namesakes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from mopeft_jax.sam.layers import PatchConvTranspose, gelu


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


def test_patch_conv_transpose_is_torch_conv_transpose_with_flax_parameters():
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 7))
    ours = PatchConvTranspose(4, patch=2)
    flax_module = nn.ConvTranspose(4, (2, 2), strides=(2, 2), transpose_kernel=True)
    params = ours.init(jax.random.key(1), x)
    # The same parameter tree and initial values as Flax's ConvTranspose under the same key.
    jax.tree.map(np.testing.assert_array_equal, params, flax_module.init(jax.random.key(1), x))
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)

    torch_module = torch.nn.ConvTranspose2d(7, 4, 2, stride=2)
    with torch.no_grad():  # (k, k, out, in) -> (in, out, k, k)
        torch_module.weight.copy_(
            torch.from_numpy(np.asarray(params["params"]["kernel"]).transpose(3, 2, 0, 1))
        )
        torch_module.bias.copy_(torch.from_numpy(np.asarray(params["params"]["bias"])))
        expected = torch_module(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)).permute(
            0, 2, 3, 1
        )
    with jax.default_matmul_precision("highest"):
        got = ours.apply(params, x)
    assert got.shape == (2, 6, 10, 4)
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), atol=1e-5)
