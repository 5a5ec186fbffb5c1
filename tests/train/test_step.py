"""The train step: frozen weights stay bit-identical, trainable ones move, every preset learns."""

import functools

import jax
import numpy as np
import pytest
from tiny_setup import tiny_batch, tiny_setup

from mopeft_jax.peft import method, preset
from mopeft_jax.train.loss import sam_loss
from mopeft_jax.train.partition import merge
from mopeft_jax.train.step import LossConfig, TrainState, make_train_step, predict_masks

PRESETS = [
    "lora",
    "prefix",
    "adapter",
    "input_expert",
    "mopeft",
    "mopeft_plus",
    "full_finetune",
    "decoder_only",
]
STEPS = 30
# Loss after STEPS steps on one batch, as a fraction of the first step's loss. The PEFT presets
# adapt a random encoder through a few thousand parameters, full fine-tuning and the decoder
# move far more, so they get a stricter bound.
MAX_FRACTION = {"full_finetune": 0.6, "decoder_only": 0.6}
DEFAULT_MAX_FRACTION = 0.85


def train(name, steps, loss_config=LossConfig()):
    model, trainable, frozen, optimizer = tiny_setup(
        preset(name), total_steps=steps, trainable=method(name).trainable
    )
    step = jax.jit(make_train_step(model, optimizer, loss_config))
    state = TrainState.create(trainable, optimizer)
    batch = tiny_batch()
    losses = []
    for _ in range(steps):
        state, metrics = step(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    return trainable, frozen, state, losses, metrics


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_overfits_one_batch(name):
    _, _, _, losses, _ = train(name, STEPS)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < MAX_FRACTION.get(name, DEFAULT_MAX_FRACTION) * losses[0], losses


@pytest.mark.parametrize("name, prompt", [("mopeft", "box"), ("mopeft_plus", "point")])
def test_frozen_stay_bit_identical_and_every_trainable_moves(name, prompt):
    trainable, frozen, state, _, metrics = train(name, 3, LossConfig(prompt=prompt))
    before = jax.tree_util.tree_map(np.asarray, frozen)
    jax.tree_util.tree_map(np.testing.assert_array_equal, frozen, before)
    moved = jax.tree_util.tree_map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), state.trainable, trainable
    )
    assert all(jax.tree_util.tree_leaves(moved))
    assert int(state.step) == 3
    assert any(k.startswith("gate/blocks_0/") for k in metrics)


@pytest.mark.parametrize("output", [None, 1])
def test_step_trains_the_configured_output(output):
    model, trainable, frozen, optimizer = tiny_setup(preset("mopeft"))
    loss_config = LossConfig(output=output)
    batch = tiny_batch()
    _, metrics = jax.jit(make_train_step(model, optimizer, loss_config))(
        TrainState.create(trainable, optimizer), frozen, batch
    )
    masks, iou, _ = predict_masks(model, merge(trainable, frozen), batch, loss_config)
    expected, _ = sam_loss(masks, iou, batch["masks"], batch["valid"], output=output)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@functools.lru_cache(maxsize=None)
def _first_step(config_changes=()):
    """The state and metrics after one MoPEFT step with `SamConfig` fields changed."""
    model, trainable, frozen, optimizer = tiny_setup(preset("mopeft"))
    model = type(model)(model.config.replace(**dict(config_changes)))
    state = TrainState.create(trainable, optimizer)
    return jax.jit(make_train_step(model, optimizer))(state, frozen, tiny_batch())


def test_rematerialised_blocks_give_the_same_step():
    state, metrics = _first_step()
    remat_state, remat_metrics = _first_step((("remat", True),))
    np.testing.assert_allclose(remat_metrics["loss"], metrics["loss"], rtol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        remat_state.trainable,
        state.trainable,
    )


def test_bfloat16_compute_keeps_float32_params():
    state, metrics = _first_step()
    bf16_state, bf16_metrics = _first_step((("dtype", "bfloat16"),))
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(bf16_state.trainable))
    # Same loss to bf16 precision (8 bits of mantissa through a few layers).
    np.testing.assert_allclose(bf16_metrics["loss"], metrics["loss"], rtol=5e-2)
