"""The PEFT layers and gates compute what their formulas say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopeft_jax.peft import (
    Bottleneck,
    Gate,
    LoRA,
    PeftConfig,
    PrefixEncoder,
    Router,
    method,
    preset,
)
from mopeft_jax.peft.gates import block_gate_names


def test_lora_starts_as_a_no_op_with_pytorch_linear_init_for_a():
    x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 64), jnp.float32)
    lora = LoRA(rank=8, features=96)
    params = lora.init(jax.random.key(0), x)["params"]
    a, b = params["lora_a"]["kernel"], params["lora_b"]["kernel"]
    assert a.shape == (64, 8) and b.shape == (8, 96)
    assert float(jnp.abs(b).max()) == 0.0
    bound = 1 / np.sqrt(64)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(jnp.abs(a).max()) <= bound and float(jnp.abs(a).max()) > 0.8 * bound
    params["lora_b"]["kernel"] = jnp.ones_like(b)
    np.testing.assert_allclose(
        lora.apply({"params": params}, x), x @ a @ jnp.ones_like(b), rtol=1e-6
    )


def test_gate_is_the_token_mean_of_a_sigmoid():
    u = np.random.RandomState(1).randn(3, 4, 5, 16).astype(np.float32)
    gate = Gate()
    params = gate.init(jax.random.key(0), u)["params"]
    w, b = np.asarray(params["dense"]["kernel"]), np.asarray(params["dense"]["bias"])
    assert np.abs(b).max() == 0 and 0 < w.std() < 0.05  # normal(0.02), bias 0
    expected = (1 / (1 + np.exp(-(u @ w + b)))).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(gate.apply({"params": params}, u), expected, rtol=1e-6)


def test_router_weights_sum_to_one_per_example():
    u = np.random.RandomState(2).randn(2, 7, 16).astype(np.float32)
    router = Router(("a", "b", "c"))
    weights, state = router.init_with_output(jax.random.key(0), u, mutable=["params", "gates"])
    assert weights.shape == (2, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(state["gates"]["b"][0], weights[:, 1])


def test_reparameterised_prefix_is_one_shared_mlp_split_per_block():
    encoder = PrefixEncoder(depth=3, length=4, features=8, reparam=True, hidden=16)
    params = encoder.init(jax.random.key(0))["params"]
    prefixes = encoder.apply({"params": params})
    assert prefixes.shape == (3, 2, 4, 8)
    e = np.asarray(params["embedding"])
    h = np.tanh(e @ params["mlp_0"]["kernel"] + params["mlp_0"]["bias"])
    out = h @ params["mlp_1"]["kernel"] + params["mlp_1"]["bias"]  # (L, depth * 2 * C)
    # Block i's keys are out[:, (2i) * C : (2i + 1) * C], its values the next C columns.
    np.testing.assert_allclose(prefixes[1, 0], out[:, 16:24], rtol=0, atol=1e-6)
    np.testing.assert_allclose(prefixes[2, 1], out[:, 40:48], rtol=0, atol=1e-6)


def test_flat_prefix_has_one_tensor_per_block():
    params = PrefixEncoder(depth=2, length=3, features=4, reparam=False).init(jax.random.key(0))
    assert jax.tree_util.tree_map(jnp.shape, params["params"]) == {"prefix": (2, 2, 3, 4)}


@pytest.mark.parametrize("zero_init", [True, False])
def test_bottleneck_init(zero_init):
    x = jnp.ones((2, 3, 32))
    params = Bottleneck(width=2, zero_init=zero_init).init(jax.random.key(0), x)["params"]
    up = np.asarray(params["up"]["kernel"])
    assert params["down"]["kernel"].shape == (32, 2) and up.shape == (2, 32)
    if zero_init:
        assert np.abs(up).max() == 0
    else:
        assert 0.01 < up.std() < 0.03  # UniPELT's normal(0.02)


def test_presets_and_gate_names():
    assert preset("mopeft").submodules == ("lora", "prefix", "adapter")
    assert preset("mopeft_plus").submodules == ("lora", "prefix", "adapter", "input_expert")
    assert not preset("lora").gated and preset("mopeft").gated
    assert method("full_finetune").trainable == "all" and not preset("full_finetune").has_layers
    assert method("decoder_only").trainable == "decoder" and method("mopeft").trainable == "peft"
    assert block_gate_names(preset("mopeft")) == ("lora_q", "lora_v", "prefix", "adapter")
    assert block_gate_names(preset("mopeft", separate_prefix_gates=True)) == (
        "lora_q",
        "lora_v",
        "prefix_k",
        "prefix_v",
        "adapter",
    )
    assert block_gate_names(preset("lora")) == ()
    assert preset("lora", lora_rank=4).lora_rank == 4


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="Unknown PEFT preset 'unipelt'"):
        preset("unipelt")
    with pytest.raises(
        ValueError, match=r"gate_type 'tanh' is not one of \('sigmoid', 'softmax'\)"
    ):
        PeftConfig(gate_type="tanh")
    with pytest.raises(ValueError, match="lora_rank must be positive, got 0"):
        PeftConfig(lora=True, lora_rank=0)
