"""A tiny MoPEFT SAM, its parameters, a batch and one train setup, shared by the sharding
tests and their subprocesses (`_sharding_worker.py`).

Everything is deterministic in its seeds, so a subprocess rebuilds exactly what the test
process built; parameters travel through an .npz file anyway (`save_tree` / `load_tree`)
so that the comparison does not even depend on that.
"""

from __future__ import annotations

import flax
import jax
import numpy as np
import optax

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import preset
from mopeft_jax.train import partition
from mopeft_jax.train import step as step_lib

BATCH = 8  # divides every data axis the tests use (8, 4, 2)
PROMPTS = 2

# One windowed block (3x3 windows padding the 4x4 tokens) and one decoder block: small
# graphs compile fast. With mopeft's default prefix MLP (64 -> 512 -> 2 * 64) the trainable
# `prefix/mlp_1/kernel` (512, 128) has 2**16 elements, so "fsdp" shards it (and its Adam
# moments) over "model", while `prefix/mlp_0/kernel` (64, 512) stays replicated.
CONFIG = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=1,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(),
    image_size=64,
    window_size=3,
    prompt_embed_dim=32,
    mask_in_chans=8,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    peft=preset("mopeft"),
)
# Partitioned AdamW as in `partition.make_optimizer`, at a constant rate and with a large
# eps. Adam's update is ~lr * sign(g) for |g| >> eps: where a gradient component nearly
# cancels (|g| ~ 1e-8), float32 summation-order noise from a different sharding flips it
# and moves that parameter by ~lr. With eps = 1e-3 the update of such components is linear
# in g, so the parameters after a step agree as closely as the gradients do.
LEARNING_RATE = 1e-2
ADAM_EPS = 1e-3
STEPS = 2  # the second step starts from the state the first one left on the mesh


def random_params(model: Sam, seed=0, dtype=None) -> dict:
    """Random parameters with the model's structure, without compiling its init.

    Kernels ~ N(0, 1/fan_in), LayerNorm scales ~ 1 + N(0, 0.1), everything else
    ~ N(0, 0.1): every path (zero-initialised adapters and LoRA factors included) is live.
    `seed` is an int or a `np.random.Generator`; `dtype` defaults to each leaf's own.
    """
    shapes = jax.eval_shape(model.init_params, jax.random.key(0))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flax.traverse_util.flatten_dict(shapes).items():
        shape = leaf.shape
        if path[-1] == "scale":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(shape)
        flat[path] = value.astype(dtype or leaf.dtype)
    return flax.traverse_util.unflatten_dict(flat)


def make_batch(batch: int = BATCH, prompts: int = PROMPTS, seed: int = 0) -> dict:
    """A batch of random images and one rectangle (box, point, mask) per prompt."""
    rng = np.random.RandomState(seed)
    size = CONFIG.image_size
    low = CONFIG.low_res_mask_size
    stride = size // low
    masks = np.zeros((batch, prompts, low, low), np.float32)
    boxes = np.zeros((batch, prompts, 4), np.float32)
    for b in range(batch):
        for p in range(prompts):
            y0, x0 = rng.randint(0, low // 2, 2)
            h, w = rng.randint(3, low // 2, 2)
            masks[b, p, y0 : y0 + h, x0 : x0 + w] = 1
            boxes[b, p] = [x0 * stride, y0 * stride, (x0 + w) * stride, (y0 + h) * stride]
    return dict(
        image=rng.randn(batch, size, size, 3).astype(np.float32),
        boxes=boxes,
        points=boxes[..., :2] + stride,
        masks=masks,
        valid=np.ones((batch, prompts), bool),
    )


def setup(params: dict):
    """(model, train step function, initial TrainState, frozen params) for `params`."""
    model = Sam(CONFIG)
    labels = partition.label_params(params)
    trainable, frozen = partition.split(params, labels)
    trainable_labels, _ = partition.split(labels, labels)
    adamw = optax.adamw(LEARNING_RATE, eps=ADAM_EPS, weight_decay=1e-4)
    optimizer = optax.multi_transform({"gate": adamw, "peft": adamw}, trainable_labels)
    state = step_lib.TrainState.create(trainable, optimizer)
    return model, step_lib.make_train_step(model, optimizer), state, frozen


def run_steps(step, state, frozen, batch, steps: int = STEPS):
    """`steps` calls of `step`; returns the final state and each step's loss."""
    losses = []
    for _ in range(steps):
        state, metrics = step(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    return state, np.asarray(losses)


def save_tree(path, tree: dict) -> None:
    """A nested dict of arrays as an .npz with "/"-joined keys (gathered to the host)."""
    flat = flax.traverse_util.flatten_dict(tree, sep="/")
    np.savez(path, **{k: np.asarray(jax.device_get(v)) for k, v in flat.items()})


def load_tree(path) -> dict:
    with np.load(path) as data:
        return flax.traverse_util.unflatten_dict({k: data[k] for k in data.files}, sep="/")


def flat_numpy(tree: dict) -> dict:
    """{"/"-joined path: host array} of a nested dict of (possibly sharded) arrays."""
    flat = flax.traverse_util.flatten_dict(tree, sep="/")
    return {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}


def max_relative_difference(a: dict, b: dict) -> float:
    """max over leaves of |a - b|_inf / max(|b|_inf, 1e-6): relative to each leaf's scale."""
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        scale = max(float(np.max(np.abs(b[k]))), 1e-6)
        worst = max(worst, float(np.max(np.abs(a[k] - b[k]))) / scale)
    return worst
