"""Leaves a checkpoint save half-done, for test_checkpoint.py to SIGKILL.

It saves step 1 of a small `TrainState` and waits until it is committed, then starts
saving step 2 with orbax's final rename (the commit of a step directory) replaced by a
wait that never ends: step 2 is fully written into its temporary directory but never
committed. It then prints "blocked" and sleeps until killed, exactly like a process
killed in the middle of a save.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import jax.numpy as jnp
import optax
from orbax.checkpoint._src.path import atomicity

from mopeft_jax.train.checkpoint import TrainCheckpointer
from mopeft_jax.train.step import TrainState

BLOCKED_STEP = 2


def small_state(scale: float) -> TrainState:
    """A two-leaf TrainState with Adam moments, all equal to `scale`-dependent values."""
    params = {"lora_a": jnp.full((3, 4), scale), "gate": jnp.full((), -scale)}
    state = TrainState.create(params, optax.adam(1e-3))
    grads = {"lora_a": jnp.ones((3, 4)), "gate": jnp.ones(())}
    _, opt_state = optax.adam(1e-3).update(grads, state.opt_state, params)
    return state.replace(step=jnp.asarray(int(scale), jnp.int32), opt_state=opt_state)


def block_commit_of_step(step: int) -> None:
    """Makes orbax hang, forever, just before it commits the directory of `step`."""
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_or_hang(self):
        if self.get_final().name == str(step):
            print("blocked", flush=True)
            while True:
                await asyncio.sleep(3600)
        return await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_hang


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)

    ckpt = TrainCheckpointer(args.workdir)
    ckpt.save(1, small_state(1.0), data_state={"next_index": 1})
    ckpt.wait()
    block_commit_of_step(BLOCKED_STEP)
    ckpt.save(BLOCKED_STEP, small_state(2.0), data_state={"next_index": 2})
    while True:  # the save's background thread hangs in the commit; wait for SIGKILL
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
