"""RowDense is nn.Dense with the same parameters, outputs and gradients on any rank."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopeft_jax.row_dense import RowDense


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3), (2, 3, 4, 3)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_dense(shape, use_bias):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    dense, row_dense = nn.Dense(7, use_bias=use_bias), RowDense(7, use_bias=use_bias)
    params = dense.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        row_dense.init(jax.random.PRNGKey(1), x)
    )
    out = row_dense.apply(params, x)
    assert out.shape == (*shape[:-1], 7)
    np.testing.assert_allclose(out, dense.apply(params, x), rtol=1e-6, atol=1e-6)

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    grads = jax.grad(loss(row_dense), argnums=(0, 1))(params, x)
    expected = jax.grad(loss(dense), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
