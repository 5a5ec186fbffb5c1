"""Sharding rules, meshes, and the sharded train step against the single-device step.

The multi-device runs need their own interpreters, since JAX fixes its CPU devices when its
backend starts and this process keeps one: `_sharding_worker.py` runs on 8 simulated CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), and as two processes of
2 devices each joined by `jax.distributed.initialize` (coordinator on 127.0.0.1, gloo
collectives). All of them start together, while this process computes the reference, and
every one is killed (by process group) if it outlives its timeout.

Tolerances: float32, where sharding changes the order of the reductions (the batch mean
becomes a sum of per-device sums). The loss agrees to `LOSS_RTOL` (<= 7e-8 relative seen);
the parameters after two AdamW steps to `PARAM_RTOL` + `PARAM_ATOL` elementwise (<= 3.4e-7
absolute seen, for parameters up to ~2 that a step moves by up to ~1e-2).
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mopeft_jax.train import sharding
from mopeft_jax.train.step import TrainState

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_sharding_worker.py")
TIMEOUT_S = 300
LOSS_RTOL = 1e-6
PARAM_RTOL = 1e-5
PARAM_ATOL = 1e-6  # 1e-4 of the learning rate: float32 noise in a ~lr-sized Adam update
PROCESSES = 2
MESH_RUNS = ("replicate_8x1", "fsdp_4x2")  # as named in _sharding_worker.MESH_RUNS


def _load_common():
    """tests/train/_sharding_common.py, whatever pytest's import mode."""
    spec = importlib.util.spec_from_file_location(
        "_sharding_common", os.path.join(HERE, "_sharding_common.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()
MESH_4x2 = AbstractMesh((4, 2), ("data", "model"))
MESH_8x1 = AbstractMesh((8, 1), ("data", "model"))


# ----------------------------------------------------------------------------- rules


def test_replicate_gives_every_leaf_the_empty_spec():
    for shape in [(), (7,), (512, 256), (16, 16, 3, 64)]:
        assert sharding.partition_spec("a/kernel", shape, MESH_4x2) == P()


def test_rules_win_over_strategy_first_match_first():
    rules = (
        (r"blocks_\d+/attn/qkv/kernel$", P(None, "model")),
        (r"qkv", P("model")),  # also matches, but comes second
        (r"tiny", P("model")),
    )
    spec = partition_spec_of("image_encoder/blocks_3/attn/qkv/kernel", (1024, 3072), rules)
    assert spec == P(None, "model")
    assert partition_spec_of("image_encoder/blocks_3/attn/qkv/bias", (3072,), rules) == P("model")
    # A rule applies whatever the leaf's size, and re.search matches inside the path.
    assert partition_spec_of("x/tiny/bias", (2,), rules) == P("model")
    # No rule matches: the strategy decides.
    assert partition_spec_of("mlp/lin1/kernel", (512, 256), rules) == P("model")
    assert sharding.partition_spec("mlp/lin1/kernel", (512, 256), MESH_4x2, rules=rules) == P()


def partition_spec_of(path, shape, rules=()):
    return sharding.partition_spec(path, shape, MESH_4x2, "fsdp", rules)


def test_fsdp_shards_the_largest_divisible_axis():
    assert partition_spec_of("k", (256, 512)) == P(None, "model")
    assert partition_spec_of("k", (512, 256)) == P("model")
    assert partition_spec_of("k", (16, 16, 3, 768)) == P(None, None, None, "model")
    # The largest axis (4097) is odd: the largest one "model" divides is taken instead.
    assert partition_spec_of("k", (4097, 32)) == P(None, "model")
    # Equal sizes: the first.
    assert partition_spec_of("k", (512, 512)) == P("model")
    # No axis divisible by the model axis (3): replicated.
    mesh_2x3 = AbstractMesh((2, 3), ("data", "model"))
    assert sharding.partition_spec("k", (256, 256), mesh_2x3, "fsdp") == P()
    assert sharding.partition_spec("k", (258, 256), mesh_2x3, "fsdp") == P("model")


def test_fsdp_replicates_small_leaves_scalars_and_a_trivial_model_axis():
    assert partition_spec_of("k", (2**16,)) == P("model")
    assert partition_spec_of("k", (2**16 - 2,)) == P()
    assert partition_spec_of("k", (255, 256)) == P()  # 65280 elements
    assert partition_spec_of("step", ()) == P()
    assert sharding.partition_spec("k", (512, 256), MESH_8x1, "fsdp") == P()


def test_partition_spec_errors():
    with pytest.raises(ValueError, match=r"^Unknown sharding strategy 'zero3'; choose one of"):
        sharding.partition_spec("k", (4,), MESH_4x2, "zero3")
    with pytest.raises(ValueError) as info:
        partition_spec_of("a/bias", (8,), ((r"bias", P(None, "model")),))
    assert str(info.value) == (
        "Rule 'bias' gives P(None, 'model') to 'a/bias', whose shape (8,) has rank 1 < 2."
    )


def test_tree_shardings_give_adam_moments_their_parameters_specs():
    params = {
        "prefix": {
            "big": {"kernel": jax.ShapeDtypeStruct((512, 256), np.float32)},
            "small": {"kernel": jax.ShapeDtypeStruct((64, 512), np.float32)},
        },
        "gate": {"bias": jax.ShapeDtypeStruct((1,), np.float32)},
    }
    labels = {"prefix": {"big": {"kernel": "peft"}, "small": {"kernel": "peft"}}}
    labels["gate"] = {"bias": "gate"}
    optimizer = optax.multi_transform({"peft": optax.adamw(1e-3), "gate": optax.adam(1e-2)}, labels)
    state = jax.eval_shape(lambda p: TrainState.create(p, optimizer), params)
    rules = ((r"gate/bias$", P("model")),)
    shardings = sharding.tree_shardings(state, MESH_4x2, "fsdp", rules)

    assert jax.tree_util.tree_structure(shardings) == jax.tree_util.tree_structure(state)
    specs = {
        sharding.path_str(path): s.spec
        for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]
    }
    assert all(isinstance(s, NamedSharding) for s in jax.tree_util.tree_leaves(shardings))
    assert specs["step"] == P()
    for name, expected in [
        ("prefix/big/kernel", P("model")),
        ("prefix/small/kernel", P()),  # 2**15 elements
        ("gate/bias", P("model")),  # by the rule
    ]:
        assert specs["trainable/" + name] == expected
        moments = [p for p in specs if p.startswith("opt_state/") and p.endswith("/" + name)]
        assert sorted("mu" if "/mu/" in p else "nu" for p in moments) == ["mu", "nu"], moments
        assert all(specs[p] == expected for p in moments), {p: specs[p] for p in moments}
    counts = [p for p in specs if p.endswith("/count")]
    assert counts and all(specs[p] == P() for p in counts)


def test_path_str_joins_dict_attribute_and_sequence_keys():
    tree = {"a": [{"b": 1}], "c": TrainState(step=2, trainable={"k": 3}, opt_state=(4,))}
    paths = [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert paths == ["a/0/b", "c/step", "c/trainable/k", "c/opt_state/0"]


# ------------------------------------------------------------------------ meshes, etc.


def test_make_mesh_on_this_process_single_device():
    assert jax.device_count() == 1, "this process must keep one device; subprocesses get more"
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data", "model")
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    assert sharding.batch_sharding(mesh) == NamedSharding(mesh, P("data"))


@pytest.mark.parametrize(
    "data, model, message",
    [
        (3, 2, "A mesh of data=3 x model=2 needs 6 devices, but 8 are given."),
        (-1, 3, "The model axis (3) does not divide the number of devices (8)."),
        (0, 1, "The data axis must have size >= 1 or -1, got 0."),
        (8, 0, "The model axis must have size >= 1, got 0."),
    ],
)
def test_make_mesh_errors(data, model, message):
    # The sizes are checked before any device is touched, so stand-ins will do.
    devices = [object()] * 8
    with pytest.raises(ValueError) as info:
        sharding.make_mesh(data, model, devices=devices)
    assert str(info.value) == message


def test_shard_batch_rejects_scalars_and_places_on_the_data_axis():
    mesh = sharding.make_mesh()
    with pytest.raises(ValueError) as info:
        sharding.shard_batch({"image": np.zeros((2, 3)), "step": np.int32(0)}, mesh)
    assert str(info.value) == "Batch leaf 'step' is a scalar; it needs a leading batch axis."
    placed = sharding.shard_batch({"image": np.arange(6.0).reshape(2, 3)}, mesh)
    assert placed["image"].sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(placed["image"], np.arange(6.0).reshape(2, 3))


def test_initialize_distributed_is_a_no_op_for_one_process():
    assert sharding.initialize_distributed(num_processes=1) is False
    assert sharding.initialize_distributed() is False  # no cluster environment here
    assert not jax.distributed.is_initialized()


def test_jit_train_step_with_shapes_only_places_nothing():
    mesh = sharding.make_mesh()
    state = jax.ShapeDtypeStruct((4,), np.float32)
    step, placed_state, placed_frozen = sharding.jit_train_step(
        lambda s, f, b: (s, {"loss": b["x"].sum()}), state, {}, {"x": state}, mesh
    )
    assert placed_state is None and placed_frozen == {}
    new_state, metrics = step(np.ones(4, np.float32), {}, {"x": np.ones(4, np.float32)})
    assert float(metrics["loss"]) == 4.0
    assert metrics["loss"].sharding.is_fully_replicated


# ------------------------------------------------------- multi-device and multi-process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args, devices, log_path):
    env = dict(os.environ)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
    )
    with open(log_path, "w") as log:
        # Its own process group, so that a timeout kills it together with any children.
        return subprocess.Popen(
            [sys.executable, WORKER, *map(str, args)],
            cwd=HERE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _reference(params, batch):
    """Two train steps with plain `jax.jit` on this process's single device."""
    _, step_fn, state, frozen = common.setup(params)
    state, losses = common.run_steps(jax.jit(step_fn), state, frozen, batch)
    return losses, common.flat_numpy(state.trainable)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference, and the subprocess runs: {name: (returncode, log, out .npz)}."""
    folder = tmp_path_factory.mktemp("sharding")
    params = common.random_params(common.Sam(common.CONFIG), seed=0)
    batch = common.make_batch(seed=0)
    common.save_tree(folder / "params.npz", params)
    np.savez(folder / "batch.npz", **batch)

    jobs = {"mesh": (["mesh", folder, folder / "mesh.npz"], 8)}
    coordinator = f"127.0.0.1:{_free_port()}"
    for i in range(PROCESSES):
        out = folder / f"process{i}.npz"
        jobs[f"process{i}"] = (["distributed", folder, out, coordinator, PROCESSES, i], 2)
    procs = {}
    try:
        for name, (args, devices) in jobs.items():
            procs[name] = _spawn(args, devices, folder / f"{name}.log")
        reference = _reference(params, batch)
        deadline = time.monotonic() + TIMEOUT_S
        results = {}
        for name, proc in procs.items():
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                code = f"timed out after {TIMEOUT_S} s"
            log = (folder / f"{name}.log").read_text()
            results[name] = (code, log, jobs[name][0][2])
    finally:
        for proc in procs.values():
            _stop(proc)
    return reference, results


def _result(runs, name):
    code, log, out = runs[1][name]
    assert code == 0, f"{name} failed ({code}):\n{log[-6000:]}"
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _compare(losses, trainable, reference):
    ref_losses, ref_trainable = reference
    assert trainable.keys() == ref_trainable.keys()
    worst = max(np.max(np.abs(v - ref_trainable[k])) for k, v in trainable.items())
    print(  # shown with -s: the differences the tolerances are set against
        f"loss relative difference {np.max(np.abs(losses / ref_losses - 1)):.1e}, "
        f"largest parameter difference {worst:.1e}"
    )
    np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    for path, value in trainable.items():
        np.testing.assert_allclose(
            value, ref_trainable[path], rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=path
        )


def _trainable(data, prefix):
    return {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}


@pytest.mark.parametrize("run", MESH_RUNS)
def test_step_on_8_devices_matches_one_device(runs, run):
    data = _result(runs, "mesh")
    _compare(data[f"{run}/losses"], _trainable(data, f"{run}/trainable/"), runs[0])


def test_step_in_two_processes_matches_one_process(runs):
    for i in range(PROCESSES):
        data = _result(runs, f"process{i}")
        assert int(data["process_count"]) == PROCESSES
        _compare(data["losses"], _trainable(data, "trainable/"), runs[0])
