"""Meshes, parameter shardings and the sharded, jitted train step.

One 2-D `jax.sharding.Mesh` with the axes ("data", "model"):

  data   the batch is split along it (data parallelism, across hosts too);
  model  parameters may be split along it ("fsdp": every large leaf is cut along one
         axis, and XLA gathers it where a computation needs it whole).

Which sharding a leaf gets depends only on its "/"-joined path and its shape
(`partition_spec`), so the same rule applied to a `TrainState` shards the Adam moments
`mu` / `nu` exactly like the parameters they belong to: their paths contain the
parameter's path and they have its shape.

Typical use (every process of a multi-host run executes the same lines)::

    initialize_distributed()                      # no-op for a single process
    mesh = make_mesh(data=-1, model=2)
    step, state, frozen = jit_train_step(make_train_step(model, opt), state, frozen,
                                         batch, mesh, strategy="fsdp")
    for local_batch in loader:                   # this process's share of the batch
        state, metrics = step(state, frozen, shard_batch(local_batch, mesh))
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "AXES",
    "FSDP_MIN_SIZE",
    "STRATEGIES",
    "batch_sharding",
    "initialize_distributed",
    "jit_train_step",
    "make_mesh",
    "partition_spec",
    "path_str",
    "place",
    "shard_batch",
    "tree_shardings",
]

AXES = ("data", "model")
STRATEGIES = ("replicate", "fsdp")
# Leaves smaller than this stay replicated under "fsdp": gathering them costs a collective
# each for next to no memory saved (64Ki float32 = 256 KiB).
FSDP_MIN_SIZE = 2**16

Rules = Sequence[Tuple[str, P]]


def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A (data, model) mesh over `devices` (default: every device of every process).

    Args:
      data: size of the "data" axis; -1 takes all devices the model axis leaves.
      model: size of the "model" axis.
      devices: the devices to lay out, default `jax.devices()`. Their order is chosen by
        `mesh_utils.create_device_mesh` (physical topology on TPU); with the model axis
        innermost, model-parallel collectives stay within a host whenever `model` divides
        the number of local devices.

    Raises:
      ValueError: if an axis size is invalid or data * model is not the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    if model < 1:
        raise ValueError(f"The model axis must have size >= 1, got {model}.")
    if data == -1:
        if count % model:
            raise ValueError(
                f"The model axis ({model}) does not divide the number of devices ({count})."
            )
        data = count // model
    elif data < 1:
        raise ValueError(f"The data axis must have size >= 1 or -1, got {data}.")
    if data * model != count:
        raise ValueError(
            f"A mesh of data={data} x model={model} needs {data * model} devices, "
            f"but {count} are given."
        )
    grid = mesh_utils.create_device_mesh((data, model), devices=devices)
    return Mesh(grid, AXES)


def path_str(path: Tuple[Any, ...]) -> str:
    """The "/"-joined form of a `jax.tree_util` key path: `trainable/image_encoder/...`."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return "/".join(parts)


def partition_spec(
    path: str,
    shape: Sequence[int],
    mesh: Mesh,
    strategy: str = "replicate",
    rules: Rules = (),
) -> P:
    """The `PartitionSpec` of one leaf, from its path and shape only.

    Args:
      path: the leaf's "/"-joined path (`path_str`).
      shape: its shape.
      mesh: the (data, model) mesh.
      strategy: for leaves no rule matches: "replicate" (P()) or "fsdp" (the largest axis
        whose size the "model" axis divides is split along "model"; leaves with fewer
        than `FSDP_MIN_SIZE` elements, scalars, and leaves with no such axis replicated).
      rules: (regex, PartitionSpec) pairs; the first whose regex `re.search`es the path
        wins over the strategy.

    Raises:
      ValueError: for an unknown strategy, or a rule's spec with more entries than the
        leaf has axes.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown sharding strategy {strategy!r}; choose one of {STRATEGIES}.")
    shape = tuple(shape)
    for pattern, spec in rules:
        if re.search(pattern, path):
            if len(spec) > len(shape):
                raise ValueError(
                    f"Rule {pattern!r} gives {spec} to {path!r}, whose shape {shape} has "
                    f"rank {len(shape)} < {len(spec)}."
                )
            return spec
    if strategy == "replicate":
        return P()
    shards = mesh.shape["model"]
    if shards == 1 or math.prod(shape) < FSDP_MIN_SIZE:
        return P()
    divisible = [axis for axis, size in enumerate(shape) if size % shards == 0]
    if not divisible:
        return P()
    # max() keeps the first of equal sizes: deterministic for square kernels.
    axis = max(divisible, key=lambda a: shape[a])
    return P(*([None] * axis + ["model"]))


def tree_shardings(tree: Any, mesh: Mesh, strategy: str = "replicate", rules: Rules = ()) -> Any:
    """A `NamedSharding` for every leaf of `tree`, by `partition_spec` of its path and shape.

    `tree` is any pytree of arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape`):
    params, a `TrainState` (paths `trainable/...`, `opt_state/.../mu/...`), an optimizer
    state. Returns a pytree of the same structure.
    """

    def sharding(path, leaf):
        spec = partition_spec(path_str(path), np.shape(leaf), mesh, strategy, rules)
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(sharding, tree)


def place(tree: Any, shardings: Any) -> Any:
    """`tree` moved onto `shardings` (a matching pytree, or one sharding for every leaf).

    Leaves may be host (NumPy) or device arrays. In a multi-process run every process
    passes the same full value (e.g. initialised from the same seed) and keeps the shards
    of its own devices; that is how parameters get onto a mesh that spans hosts.
    """
    return jax.device_put(tree, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch's sharding: the leading axis split along "data", replicated over "model"."""
    return NamedSharding(mesh, P("data"))


def _local_data_shards(mesh: Mesh) -> int:
    """How many distinct slices of the "data" axis this process's devices hold."""
    data_axis = mesh.axis_names.index("data")
    local = {d.id for d in jax.local_devices()}
    coordinates = {
        index[data_axis] for index, device in np.ndenumerate(mesh.devices) if device.id in local
    }
    return len(coordinates)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Global batch arrays from this process's share of the batch.

    Each process passes its own local batch (a pytree of arrays, all with the batch on the
    leading axis); the result is one global `jax.Array` per leaf, split along "data" via
    `jax.make_array_from_process_local_data`. With one process it is the batch itself,
    placed on the mesh.

    Raises:
      ValueError: if a leaf is a scalar, or its leading axis is not divisible by the
        number of data-axis slices this process holds.
    """
    sharding = batch_sharding(mesh)
    shards = _local_data_shards(mesh)

    def make(path, leaf):
        leaf = np.asarray(leaf)
        name = path_str(path) or "<root>"
        if leaf.ndim == 0:
            raise ValueError(f"Batch leaf {name!r} is a scalar; it needs a leading batch axis.")
        if leaf.shape[0] % shards:
            raise ValueError(
                f"Batch leaf {name!r} has a local leading axis of {leaf.shape[0]}, which is "
                f"not divisible by the {shards} data-axis slices on this process (mesh "
                f"{dict(mesh.shape)}, {jax.process_count()} process(es))."
            )
        return jax.make_array_from_process_local_data(sharding, leaf)

    return jax.tree_util.tree_map_with_path(make, batch)


def jit_train_step(
    step_fn: Callable,
    state: Any,
    frozen: Any,
    batch: Any,
    mesh: Mesh,
    strategy: str = "replicate",
    rules: Rules = (),
    donate: bool = False,
) -> Tuple[Callable, Any, Any]:
    """`step_fn` jitted with explicit shardings, and `state`, `frozen` placed on them.

    Args:
      step_fn: `step(state, frozen, batch) -> (state, metrics)`, e.g. from
        `train.step.make_train_step`.
      state: the `TrainState` (arrays or `jax.ShapeDtypeStruct`s).
      frozen: the frozen parameters (arrays or `jax.ShapeDtypeStruct`s).
      batch: a batch or its `jax.ShapeDtypeStruct`s; only its tree structure is used.
      mesh: the (data, model) mesh.
      strategy, rules: how `state` and `frozen` are sharded (`partition_spec`).
      donate: donate the input state's buffers to the output state (saves a copy of the
        parameters and optimizer state on accelerators; the state passed in is then
        invalid after each call).

    Returns:
      `(step, state, frozen)`: the jitted step, which takes the state and frozen params as
      returned here and a batch placed by `shard_batch`, and returns the new state (same
      shardings) and replicated metrics; and `state`, `frozen` placed on their shardings
      (`place`), or None where ShapeDtypeStructs were given.
    """
    state_shardings = tree_shardings(state, mesh, strategy, rules)
    frozen_shardings = tree_shardings(frozen, mesh, strategy, rules)
    data = batch_sharding(mesh)
    batch_shardings = jax.tree_util.tree_map(lambda _: data, batch)
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_shardings, frozen_shardings, batch_shardings),
        # The metrics are a prefix: every scalar of the dict replicated.
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,) if donate else (),
    )

    def placed(tree, shardings):
        abstract = any(
            isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(tree)
        )
        return None if abstract else place(tree, shardings)

    return jitted, placed(state, state_shardings), placed(frozen, frozen_shardings)


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    **kwargs,
) -> bool:
    """`jax.distributed.initialize` for multi-process runs; nothing for a single process.

    Must be called before any other JAX call that touches devices.

    * `num_processes == 1`: nothing to do.
    * Any argument given: passed through to `jax.distributed.initialize` (with `kwargs`,
      e.g. `local_device_ids`, `initialization_timeout`).
    * No argument: JAX's cluster detection (Cloud TPU, Slurm, Open MPI, Kubernetes, ...)
      fills them in if it recognises the environment; otherwise this is a single-process
      run and nothing happens.

    Returns:
      True if the distributed runtime is (now) initialised, False for a single process.
    """
    if jax.distributed.is_initialized():
        return True
    if num_processes == 1:
        return False
    explicit = (coordinator_address, num_processes, process_id)
    if all(arg is None for arg in explicit) and not kwargs and not _cluster_detected():
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    return True


def _cluster_detected() -> bool:
    """Whether one of JAX's auto-detected cluster environments is present.

    Uses the registry behind `jax.distributed.initialize()`'s own detection (private, hence
    the guard): if it cannot be read, the run is taken as single-process.
    """
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:
        return False
    for env in ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if env.is_env_present():
                return True
        except Exception:  # a detector probing an absent service must not break startup
            continue
    return False
