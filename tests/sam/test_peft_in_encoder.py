"""The image encoder hosts the PEFT mixture without disturbing SAM."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sam_configs import SMALL_CONFIGS

from mopeft_jax import Sam
from mopeft_jax.peft import PeftConfig, preset
from mopeft_jax.peft.gates import gate_values

BASE = SMALL_CONFIGS["windowed_padded"]  # windows with padding and a global block


@pytest.fixture(scope="module")
def sam_params():
    return Sam(BASE).init_params(jax.random.key(7))


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.RandomState(0).randn(2, 128, 128, 3), jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def run(config, params, images):
    """Masks, IoU and gate values for two images with a box each."""
    boxes = jnp.asarray([[10, 12, 70, 90], [30, 5, 120, 60]], jnp.float32)
    (masks, iou), state = Sam(config).apply(
        {"params": params}, images, boxes=boxes, mutable=["gates"]
    )
    return masks, iou, gate_values(state)


def test_all_submodules_off_is_exactly_sam(sam_params, images):
    config = BASE.replace(peft=PeftConfig())
    params = Sam(config).init_params(jax.random.key(7))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(sam_params)
    expected = run(BASE, sam_params, images)
    actual = run(config, sam_params, images)
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_array_equal(actual[1], expected[1])


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("gate_type", ["sigmoid", "softmax"])
def test_lora_and_adapter_start_exactly_at_sam(sam_params, images, gated, gate_type):
    config = BASE.replace(
        peft=PeftConfig(
            lora=True, adapter=True, input_expert=True, gated=gated, gate_type=gate_type
        )
    )
    params = Sam(config).init_params(jax.random.key(1), pretrained=sam_params)
    expected = run(BASE, sam_params, images)
    actual = run(config, params, images)
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_array_equal(actual[1], expected[1])


@pytest.mark.parametrize(
    "name", ["lora", "prefix", "adapter", "input_expert", "mopeft", "mopeft_plus"]
)
def test_sam_params_load_unchanged_beside_peft_params(sam_params, name):
    config = BASE.replace(peft=preset(name))
    params = Sam(config).init_params(jax.random.key(1), pretrained=sam_params)
    flat = flax.traverse_util.flatten_dict(params)
    for path, value in flax.traverse_util.flatten_dict(sam_params).items():
        np.testing.assert_array_equal(flat[path], value)
    fresh = flax.traverse_util.flatten_dict(Sam(config).init_params(jax.random.key(1)))
    new_paths = set(flat) - set(flax.traverse_util.flatten_dict(sam_params))
    assert new_paths and all(np.array_equal(flat[p], fresh[p]) for p in new_paths)


def test_pretrained_params_that_do_not_fit_are_named(sam_params):
    bad = flax.traverse_util.flatten_dict(sam_params)
    bad[("image_encoder", "neck_1", "scale")] = jnp.zeros(5)
    bad[("image_encoder", "extra", "kernel")] = jnp.zeros(2)
    with pytest.raises(
        ValueError,
        match=r"image_encoder/neck_1/scale has shape \(5,\), the model "
        r"\(32,\); image_encoder/extra/kernel is not a parameter",
    ):
        Sam(BASE.replace(peft=preset("lora"))).init_params(
            jax.random.key(0), pretrained=flax.traverse_util.unflatten_dict(bad)
        )


def test_gate_values_come_out_of_the_forward_pass(sam_params, images):
    config = BASE.replace(peft=preset("mopeft_plus"))
    params = Sam(config).init_params(jax.random.key(1), pretrained=sam_params)
    gates = run(config, params, images)[2]
    expected = {"input_expert"} | {
        f"blocks_{i}/{n}"
        for i in range(BASE.encoder_depth)
        for n in ("lora_q", "lora_v", "prefix", "adapter")
    }
    assert set(gates) == expected
    for value in gates.values():
        assert value.shape == (2,) and bool(jnp.all((value > 0) & (value < 1)))


def test_softmax_router_weights_of_a_block_sum_to_one(sam_params, images):
    config = BASE.replace(peft=preset("mopeft", gate_type="softmax"))
    params = Sam(config).init_params(jax.random.key(1), pretrained=sam_params)
    gates = run(config, params, images)[2]
    total = sum(gates[f"blocks_1/{n}"] for n in ("lora_q", "lora_v", "prefix", "adapter"))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_prefix_is_active_at_init_and_scaled_by_its_gate(sam_params, images):
    """A prefix at init is not a no-op (attention mass moves to it); a gate saturated at 1
    gives exactly the ungated prefix."""
    config = BASE.replace(peft=preset("prefix"))
    params = Sam(config).init_params(jax.random.key(1), pretrained=sam_params)
    plain = run(BASE, sam_params, images)[0]
    ungated = run(config, params, images)[0]
    assert float(jnp.abs(ungated - plain).max()) > 1e-3
    gated = BASE.replace(peft=preset("prefix", gated=True))
    flat = flax.traverse_util.flatten_dict(
        Sam(gated).init_params(jax.random.key(1), pretrained=sam_params)
    )
    for path in list(flat):
        if len(path) > 2 and path[-3].startswith("gate_") and path[-1] == "bias":
            flat[path] = jnp.full_like(flat[path], 40.0)  # sigmoid(40) == 1 in float32
    saturated = flax.traverse_util.unflatten_dict(flat)
    np.testing.assert_allclose(run(gated, saturated, images)[0], ungated, rtol=0, atol=1e-4)
