"""A tiny MoPEFT training run that checkpoints every step and resumes after a kill.

Used by test_checkpoint.py (run as a script in a subprocess): it trains a small SAM with
the `mopeft` preset for `--steps` steps over a deterministic grain pipeline, saving the
`TrainState` and the iterator's state after every step. Started again on the same
`--workdir`, it resumes from the latest complete checkpoint. At the end it writes every
leaf of the final `TrainState` (trainable params and optimizer state) to `--out`.

Its stdout, one flushed line per event, is what the test watches:
  "start <step>"                 training begins at <step> (0, or the restored step),
  "step <step> <loss>"           a step is done and its checkpoint save has started,
  "done"                         the final state is written.

The builders are importable, so the test's in-process checks use the same model.
"""

from __future__ import annotations

import argparse
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import preset
from mopeft_jax.train import partition
from mopeft_jax.train import step as step_lib
from mopeft_jax.train.checkpoint import TrainCheckpointer

IMAGE_SIZE = 64
PROMPTS = 2
BATCH = 2
EXAMPLES = 5
LOW_RES = IMAGE_SIZE // 4  # the decoder's mask resolution: 4x the 16-pixel patch grid


def tiny_config(dim: int = 32, peft_name: str = "mopeft", **peft_overrides) -> SamConfig:
    """A two-block SAM small enough to compile in seconds on a CPU.

    All-global attention and one decoder block: windowed attention and a second two-way
    block double XLA's compile time, which dominates a run this short.
    """
    peft = preset(
        peft_name,
        **{
            "lora_rank": 2,
            "prefix_length": 2,
            "prefix_hidden": 16,
            "adapter_reduction": 16,
            **peft_overrides,
        },
    )
    return SamConfig(
        encoder_embed_dim=dim,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(0, 1),
        image_size=IMAGE_SIZE,
        window_size=0,
        prompt_embed_dim=32,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        peft=peft,
    )


def random_params(model: Sam, seed: int = 0) -> dict:
    """Params of `model` drawn with numpy: N(0, 0.05) everywhere.

    `Sam.init_params` compiles the whole forward pass with every prompt type (~20 s on a
    small CPU); the checkpoint tests need only deterministic, non-trivial values, so the
    shapes come from `jax.eval_shape` and the values from a seeded numpy generator.
    """
    shapes = jax.eval_shape(model.init_params, jax.random.key(0))
    rng = np.random.RandomState(seed)
    return jax.tree_util.tree_map(
        # Cast in numpy: casting on the device would compile one conversion per shape.
        lambda s: jnp.asarray((0.05 * rng.standard_normal(s.shape)).astype(s.dtype)),
        shapes,
    )


def build(config: SamConfig, total_steps: int = 12):
    """(model, optimizer, fresh TrainState, frozen params) for `config`."""
    model = Sam(config)
    params = random_params(model)
    labels = partition.label_params(params)
    trainable, frozen = partition.split(params, labels)
    trainable_labels, _ = partition.split(labels, labels)
    optimizer = partition.make_optimizer(
        partition.OptimizerConfig(
            warmup_steps=2,
            total_steps=total_steps,
            learning_rates={"gate": 1e-2, "peft": 1e-2, "decoder": 1e-3, "sam": 1e-4},
        ),
        trainable_labels,
    )
    state = step_lib.TrainState.create(trainable, optimizer)
    return model, optimizer, state, frozen


def examples(count: int = EXAMPLES, seed: int = 0) -> list:
    """Precomputed training examples: an image, box/point prompts and their masks."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        masks = np.zeros((PROMPTS, LOW_RES, LOW_RES), np.float32)
        boxes = np.zeros((PROMPTS, 4), np.float32)
        for p in range(PROMPTS):
            y0, x0 = rng.randint(0, LOW_RES // 2, 2)
            h, w = rng.randint(2, LOW_RES // 2, 2)
            masks[p, y0 : y0 + h, x0 : x0 + w] = 1
            boxes[p] = [x0 * 4, y0 * 4, (x0 + w) * 4, (y0 + h) * 4]
        out.append(
            dict(
                image=rng.randn(IMAGE_SIZE, IMAGE_SIZE, 3).astype(np.float32),
                boxes=boxes,
                points=boxes[:, :2] + 2,
                masks=masks,
                valid=np.ones((PROMPTS,), bool),
            )
        )
    return out


def data_iterator(seed: int = 0):
    """A grain iterator over shuffled, repeated batches, with get_state/set_state."""
    dataset = grain.MapDataset.source(examples()).shuffle(seed=seed).repeat().batch(BATCH)
    return iter(dataset.to_iter_dataset())


def flat_leaves(tree) -> dict:
    """Every leaf of `tree` by its key path, as numpy arrays (for an .npz)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True, help="checkpoint directory")
    parser.add_argument("--out", required=True, help=".npz for the final TrainState")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.0,
        help="seconds to sleep after each step, so that a test can kill the run mid-way",
    )
    args = parser.parse_args(argv)

    model, optimizer, state, frozen = build(tiny_config(), total_steps=args.steps)
    train_step = jax.jit(step_lib.make_train_step(model, optimizer))
    data = data_iterator()
    with TrainCheckpointer(args.workdir, max_to_keep=2) as ckpt:
        if ckpt.latest_step() is not None:
            state, data_state = ckpt.restore(state)[:2]
            data.set_state(data_state)
        print(f"start {int(state.step)}", flush=True)
        while int(state.step) < args.steps:
            state, metrics = train_step(state, frozen, next(data))
            step = int(state.step)
            loss = float(metrics["loss"])
            ckpt.save(step, state, data_state=data.get_state(), metadata={"loss": loss})
            print(f"step {step} {loss:.6f}", flush=True)
            time.sleep(args.step_delay)
    np.savez(args.out, **flat_leaves(state))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
