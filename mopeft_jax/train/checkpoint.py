"""Training checkpoints: the trainable state, the data iterator's position and metadata.

One checkpoint is one orbax step directory `<directory>/<step>/` with up to three items:

  state/     the `TrainState` (step, trainable params, optimizer state) as an orbax
             PyTree (tensorstore arrays + the tree's metadata);
  data/      the data iterator's state (`grain.DatasetIterator.get_state()`) as JSON;
  metadata/  free-form JSON (config dicts, metrics), if given.

The frozen SAM weights are never written: they are not part of `TrainState` and come
back from the pretrained checkpoint when a run resumes, so a checkpoint costs only the
PEFT parameters and their optimizer state.

Saves are atomic: orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames
it to `<step>` only once every item is on disk, and only renamed step directories are
ever listed, so a save interrupted at any point (even by SIGKILL) is never restored;
the previous complete checkpoint stays the latest. Saves are asynchronous by default:
`save` returns once the arrays are copied off the device, and the writing overlaps the
next train steps (`wait` blocks until it is committed).

Typical resume:

    with TrainCheckpointer(workdir / "checkpoints") as ckpt:
        if ckpt.latest_step() is not None:
            state, data_state, _ = ckpt.restore(state)
            data_iter.set_state(data_state)
        for batch in data_iter:
            state, metrics = train_step(state, frozen, batch)
            ckpt.save(int(state.step), state, data_state=data_iter.get_state())
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
from typing import Any, Mapping, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

STATE = "state"
DATA = "data"
METADATA = "metadata"

# grain's DatasetIterator states are JSON dicts, but DataLoader states are bytes; bytes are
# wrapped so that restore can hand back exactly the type that was saved.
_BYTES_KEY = "__bytes_base64__"


class Restored(NamedTuple):
    """What `TrainCheckpointer.restore` returns (unpacks as `state, data_state, metadata`)."""

    state: Any
    data_state: Any
    metadata: Optional[dict]


def to_json(value: Any) -> Any:
    """`value` with arrays, numpy/jax scalars, tuples and dataclasses made JSON-able."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(value).tolist()
    if isinstance(value, bytes):
        return {_BYTES_KEY: base64.b64encode(value).decode("ascii")}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_BYTES_KEY}:
        return base64.b64decode(value[_BYTES_KEY])
    return value


def abstract_like(tree: Any) -> Any:
    """`tree` with every array replaced by a `jax.ShapeDtypeStruct` (sharding kept).

    Restoring against it gives back the template's pytree types (the `TrainState`, optax's
    named-tuple states) and places every array with the template's sharding.
    """
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _remove_uncommitted_saves(directory: str) -> None:
    """Deletes the `<step>.orbax-checkpoint-tmp*` directories of saves never committed.

    They are never listed as steps, so this only stops them piling up. Orbax's own
    `cleanup_tmp_directories` does it in the background and awaits it only at the next
    save, so a directory listed right after opening could still hold them; this is done
    before the constructor returns. Only the primary process deletes (every process
    sees the same directory).
    """
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if ocp.utils.TMP_DIR_SUFFIX in name:
            shutil.rmtree(os.path.join(directory, name))


class TrainCheckpointer:
    """Saves and restores `TrainState` + data iterator state + JSON metadata with orbax.

    Args:
      directory: where step directories go (created if missing).
      max_to_keep: keep the newest this many checkpoints; None keeps all.
      save_interval_steps: `save` writes only steps that are multiples of this (and the
        first one it is asked for), unless `force=True`.
      async_save: write in a background thread; `save` returns once the arrays are off
        the device.
    """

    def __init__(
        self,
        directory: "os.PathLike[str] | str",
        *,
        max_to_keep: Optional[int] = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            preservation_policy=checkpoint_managers.LatestN(n=max_to_keep),
            enable_async_checkpointing=async_save,
            create=True,
        )
        _remove_uncommitted_saves(self.directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                DATA: ocp.JsonCheckpointHandler(),
                METADATA: ocp.JsonCheckpointHandler(),
            },
        )

    # -- saving -------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_state: Any = None,
        metadata: Optional[Mapping[str, Any]] = None,
        force: bool = False,
    ) -> bool:
        """Starts saving `state` (and the optional items) as checkpoint `step`.

        Args:
          step: the checkpoint's number, normally `int(state.step)`.
          state: the `TrainState` (or any pytree of arrays): never the frozen params.
          data_state: the data iterator's `get_state()` (JSON-able or bytes), or None.
          metadata: JSON-able extras (configs, metrics), or None.
          force: save even if `step` is off the save interval.

        Returns:
          Whether a save was started (False when the interval policy skipped the step).
        """
        items = {STATE: ocp.args.StandardSave(state)}
        if data_state is not None:
            items[DATA] = ocp.args.JsonSave(to_json(data_state))
        if metadata is not None:
            items[METADATA] = ocp.args.JsonSave(to_json(metadata))
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def wait(self) -> None:
        """Blocks until every started save is committed (or raises its error)."""
        self._manager.wait_until_finished()

    # -- restoring ------------------------------------------------------------------------

    def all_steps(self) -> list:
        """The steps of the complete (committed) checkpoints, oldest first.

        Waits for pending saves first, so a step is listed only once it is on disk.
        """
        self.wait()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint's step, or None if there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, state_template: Any, step: Optional[int] = None) -> Restored:
        """Restores checkpoint `step` (default: the latest).

        Args:
          state_template: a `TrainState` (concrete, or abstract via `abstract_like`) with
            the structure, dtypes and shardings to restore into, e.g. the freshly created
            state of the resuming run.
          step: which checkpoint; None for the latest.

        Returns:
          `(state, data_state, metadata)`; the last two are None where they were not saved.

        Raises:
          FileNotFoundError: no checkpoint (or not `step`) in the directory.
        """
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"No checkpoint to restore in {self.directory!r}.")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory!r}; it holds steps {steps}."
            )
        saved = self._saved_items(step)
        items = {STATE: ocp.args.StandardRestore(abstract_like(state_template))}
        for name in (DATA, METADATA):
            if name in saved:
                items[name] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return Restored(
            state=restored[STATE],
            data_state=_from_json(restored[DATA]) if DATA in saved else None,
            metadata=restored[METADATA] if METADATA in saved else None,
        )

    def _saved_items(self, step: int) -> set:
        """The items checkpoint `step` holds (data and metadata are optional)."""
        return set(self._manager.item_metadata(step).keys())

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "TrainCheckpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
