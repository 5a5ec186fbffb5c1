"""Subprocess entry point of tests/train/test_sharding.py: the train step on a mesh.

JAX fixes the number of CPU devices when its backend starts, so runs on several simulated
devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) or in several processes need
a fresh interpreter each:

  python _sharding_worker.py mesh INPUTS OUT
      8 devices: two steps on a (8, 1) "replicate" mesh and a (4, 2) "fsdp" mesh.
  python _sharding_worker.py distributed INPUTS OUT COORDINATOR NUM_PROCESSES PROCESS_ID
      one process of a multi-process run: two steps on its share of the batch.

INPUTS is a folder with params.npz and batch.npz (written by the test); OUT an .npz of the
losses and the final trainable parameters (gathered to the host), per run. Facts about the
shardings are asserted here, where the arrays live.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from mopeft_jax.train import sharding  # touches no device: safe before initialize

P = sharding.P

# (name, data, model, strategy, rules). The rule puts a frozen leaf on "model" as well, so
# frozen inputs with a non-trivial sharding are covered too.
MESH_RUNS = (
    ("replicate_8x1", 8, 1, "replicate", ()),
    ("fsdp_4x2", 4, 2, "fsdp", ((r"patch_embed/proj/kernel$", P(None, None, None, "model")),)),
)
# A leaf that "fsdp" must shard over "model" with the tiny config (2**16 elements).
FSDP_SHARDED = "image_encoder/prefix/mlp_1/kernel"


def _load(inputs):
    import _sharding_common as common

    params = common.load_tree(os.path.join(inputs, "params.npz"))
    with np.load(os.path.join(inputs, "batch.npz")) as data:
        batch = {k: data[k] for k in data.files}
    return common, params, batch


def _specs(tree):
    """{"/"-path: PartitionSpec} of a pytree of placed arrays."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {sharding.path_str(path): leaf.sharding.spec for path, leaf in leaves}


def _check_shardings(state, new_state, frozen, batch, mesh, strategy):
    """The placement is what the strategy promises, and the step keeps it."""
    specs = _specs(state)
    assert specs == _specs(new_state), "the step changed the state's shardings"
    for name, array in batch.items():
        assert array.sharding.spec == P("data"), (name, array.sharding)
        rows = {shard.data.shape[0] for shard in array.addressable_shards}
        assert rows == {array.shape[0] // mesh.shape["data"]}, (name, rows)
    on_model = sorted(path for path, spec in specs.items() if "model" in spec)
    if strategy == "replicate":
        assert not on_model, on_model
        return
    # The parameter and both its Adam moments, with the same spec.
    expected = {"trainable/" + FSDP_SHARDED}
    expected |= {p for p in specs if p.endswith(FSDP_SHARDED) and ("/mu/" in p or "/nu/" in p)}
    assert len(expected) == 3, expected
    assert expected <= set(on_model), on_model
    assert len({specs[p] for p in expected}) == 1, {p: specs[p] for p in expected}
    kernel = state.trainable["image_encoder"]["prefix"]["mlp_1"]["kernel"]
    assert {s.data.shape for s in kernel.addressable_shards} == {(256, 128)}, kernel.sharding
    patch = frozen["image_encoder"]["patch_embed"]["proj"]["kernel"]
    assert patch.sharding.spec == P(None, None, None, "model"), patch.sharding
    small = state.trainable["image_encoder"]["prefix"]["mlp_0"]["kernel"]  # 2**15 elements
    assert small.sharding.spec == P(), small.sharding


def _check_indivisible_batch(mesh):
    try:
        sharding.shard_batch({"image": np.zeros((6, 2), np.float32)}, mesh)
    except ValueError as error:
        data = mesh.shape["data"]
        expected = (
            f"Batch leaf 'image' has a local leading axis of 6, which is not divisible by the "
            f"{data} data-axis slices on this process (mesh {dict(mesh.shape)}, 1 process(es))."
        )
        assert str(error) == expected, str(error)
    else:
        raise AssertionError("shard_batch accepted 6 rows for a data axis of 8 or 4")


def run_mesh(inputs, out):
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    assert jax.device_count() == 8, jax.devices()
    common, params, batch = _load(inputs)
    results = {}
    for name, data, model_axis, strategy, rules in MESH_RUNS:
        mesh = sharding.make_mesh(data, model_axis)
        _, step_fn, state, frozen = common.setup(params)
        step, state, frozen = sharding.jit_train_step(
            step_fn, state, frozen, batch, mesh, strategy, rules
        )
        global_batch = sharding.shard_batch(batch, mesh)
        _check_indivisible_batch(mesh)
        new_state, losses = common.run_steps(step, state, frozen, global_batch)
        _check_shardings(state, new_state, frozen, global_batch, mesh, strategy)
        results[f"{name}/losses"] = losses
        for path, value in common.flat_numpy(new_state.trainable).items():
            results[f"{name}/trainable/{path}"] = value
        print(f"{name}: losses {losses.tolist()}", flush=True)
    np.savez(out, **results)


def run_distributed(inputs, out, coordinator, num_processes, process_id):
    # Before anything touches a device; bounded so a lost peer fails the run, not hangs it.
    assert sharding.initialize_distributed(
        coordinator,
        num_processes,
        process_id,
        initialization_timeout=120,
        shutdown_timeout_seconds=60,
    )
    import jax
    from jax.experimental import multihost_utils

    jax.config.update("jax_default_matmul_precision", "highest")
    assert jax.process_count() == num_processes and jax.process_index() == process_id
    local = jax.local_device_count()
    assert jax.device_count() == num_processes * local, jax.devices()
    common, params, batch = _load(inputs)
    # Data across processes, model within each one: (processes, local devices).
    mesh = sharding.make_mesh(data=num_processes, model=local)
    _, step_fn, state, frozen = common.setup(params)
    step, state, frozen = sharding.jit_train_step(step_fn, state, frozen, batch, mesh, "fsdp")
    # This process's share of the global batch: the rows its data slice covers.
    rows = len(next(iter(batch.values()))) // num_processes
    mine = {k: v[process_id * rows : (process_id + 1) * rows] for k, v in batch.items()}
    global_batch = sharding.shard_batch(mine, mesh)
    assert global_batch["image"].shape[0] == rows * num_processes
    new_state, losses = common.run_steps(step, state, frozen, global_batch)
    kernel = new_state.trainable["image_encoder"]["prefix"]["mlp_1"]["kernel"]
    assert kernel.sharding.spec == P("model"), kernel.sharding
    trainable = multihost_utils.process_allgather(new_state.trainable, tiled=True)
    results = {"losses": losses, "process_count": jax.process_count()}
    for path, value in common.flat_numpy(trainable).items():
        results[f"trainable/{path}"] = value
    np.savez(out, **results)
    print(f"process {process_id}: losses {losses.tolist()}", flush=True)


def main(argv):
    mode = argv[0]
    if mode == "mesh":
        run_mesh(*argv[1:3])
    elif mode == "distributed":
        inputs, out, coordinator, num_processes, process_id = argv[1:6]
        run_distributed(inputs, out, coordinator, int(num_processes), int(process_id))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
