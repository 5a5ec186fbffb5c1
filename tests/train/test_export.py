"""Exported params compute what the trained PEFT model computes."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_setup import TINY

from mopeft_jax import Sam
from mopeft_jax.peft import preset
from mopeft_jax.train.export import fold_prefix, merge_lora


def perturbed(params, seed=0):
    """Params with every leaf moved, so that zero-initialised LoRA B is not zero."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


@jax.jit
def images():
    return jax.random.normal(jax.random.key(3), (2, TINY.image_size, TINY.image_size, 3))


def predict(config, params):
    boxes = jnp.asarray([[10, 12, 70, 90], [30, 5, 120, 60]], jnp.float32)
    return Sam(config).apply({"params": params}, images(), boxes=boxes)[0]


def test_merged_lora_is_a_plain_sam_with_the_same_outputs():
    config = TINY.replace(peft=preset("lora"))
    params = perturbed(Sam(config).init_params(jax.random.key(0)))
    merged, merged_config = merge_lora(params, config)
    assert merged_config.peft is None
    plain_tree = jax.tree_util.tree_structure(Sam(TINY).init_params(jax.random.key(0)))
    assert jax.tree_util.tree_structure(merged) == plain_tree
    np.testing.assert_allclose(
        predict(merged_config, merged), predict(config, params), rtol=0, atol=2e-4
    )


def test_merge_keeps_other_peft_layers():
    config = TINY.replace(peft=preset("lora", adapter=True))
    params = perturbed(Sam(config).init_params(jax.random.key(0)))
    merged, merged_config = merge_lora(params, config)
    assert merged_config.peft == preset("adapter")
    paths = ["/".join(p) for p in flax.traverse_util.flatten_dict(merged)]
    assert any("adapter" in p for p in paths) and not any("lora" in p for p in paths)
    np.testing.assert_allclose(
        predict(merged_config, merged), predict(config, params), rtol=0, atol=2e-4
    )


def test_gated_lora_cannot_be_merged():
    config = TINY.replace(peft=preset("mopeft"))
    params = Sam(config).init_params(jax.random.key(0))
    with pytest.raises(ValueError, match="Gated LoRA cannot be merged"):
        merge_lora(params, config)


def test_folded_prefix_gives_the_same_outputs_with_fewer_params():
    config = TINY.replace(peft=preset("mopeft"))
    params = perturbed(Sam(config).init_params(jax.random.key(0)))
    folded, folded_config = fold_prefix(params, config)
    assert not folded_config.peft.prefix_reparam
    count = lambda t: sum(x.size for x in jax.tree_util.tree_leaves(t))  # noqa: E731
    assert count(folded["image_encoder"]["prefix"]) == 2 * 2 * 10 * TINY.encoder_embed_dim
    assert count(folded) < count(params)
    np.testing.assert_allclose(
        predict(folded_config, folded), predict(config, params), rtol=0, atol=2e-5
    )
