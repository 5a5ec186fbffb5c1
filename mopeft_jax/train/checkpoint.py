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

A committed step can still be damaged afterwards (a disk filling up, files deleted or
truncated by hand). Restoring the latest step then skips every unreadable step, naming it
and the cause in one warning, and restores the newest readable one.

Typical resume:

    with TrainCheckpointer(workdir / "checkpoints") as ckpt:
        if ckpt.latest_step() is not None:
            state, data_state = ckpt.restore(state)[:2]
            data_iter.set_state(data_state)
        for batch in data_iter:
            state, metrics = train_step(state, frozen, batch)
            ckpt.save(int(state.step), state, data_state=data_iter.get_state())
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

STATE = "state"
DATA = "data"
METADATA = "metadata"

log = logging.getLogger(__name__)

# grain's DatasetIterator states are JSON dicts, but DataLoader states are bytes; bytes are
# wrapped so that restore can hand back exactly the type that was saved.
_BYTES_KEY = "__bytes_base64__"


class Restored(NamedTuple):
    """What `TrainCheckpointer.restore` returns."""

    state: Any
    data_state: Any
    metadata: Optional[dict]
    step: int


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


class UnreadableCheckpoint(RuntimeError):
    """A checkpoint step that cannot be restored (missing items, damaged files)."""


class TrainCheckpointer:
    """Saves and restores `TrainState` + data iterator state + JSON metadata with orbax.

    Args:
      directory: where step directories go (created if missing, unless read-only).
      max_to_keep: keep the newest this many checkpoints; None keeps all.
      save_interval_steps: `save` writes only steps that are multiples of this (and the
        first one it is asked for), unless `force=True`.
      async_save: write in a background thread; `save` returns once the arrays are off
        the device.
      read_only: only restore: nothing is created or deleted (for reading another run).
    """

    def __init__(
        self,
        directory: "os.PathLike[str] | str",
        *,
        max_to_keep: Optional[int] = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            preservation_policy=checkpoint_managers.LatestN(n=max_to_keep),
            enable_async_checkpointing=async_save,
            # Not orbax's own read_only mode, which warns at every opening; a reader just
            # neither creates the directory nor cleans it up.
            create=not read_only,
            cleanup_tmp_directories=False,
        )
        if not read_only:
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

    def delete(self, step: int) -> None:
        """Deletes checkpoint `step` (e.g. a state found to be bad after it was saved)."""
        self.wait()
        self._manager.delete(int(step))

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

    def restore(
        self,
        state_template: Any = None,
        step: Optional[int] = None,
        *,
        require_data: bool = False,
    ) -> Restored:
        """Restores checkpoint `step`, or the newest readable one.

        Args:
          state_template: a `TrainState` (concrete, or abstract via `abstract_like`) with
            the structure, dtypes and shardings to restore into, e.g. the freshly created
            state of the resuming run; None for the saved tree as nested dicts of numpy
            arrays ({"step", "trainable", "opt_state"}), whatever the optimizer was.
          step: which checkpoint; None for the newest readable one: unreadable steps are
            skipped with a warning that names them and the cause.
          require_data: a step without the data iterator's state counts as unreadable.

        Returns:
          `(state, data_state, metadata, step)`; data_state and metadata are None where they
          were not saved.

        Raises:
          FileNotFoundError: no checkpoint (or not `step`) in the directory.
          UnreadableCheckpoint: `step` (or, with step None, every step) cannot be restored.
        """

        def read(step):
            saved = self._saved_items(step)
            if require_data and DATA not in saved:
                raise UnreadableCheckpoint(f"it has no {DATA}/ item (the data iterator's state)")
            template = None if state_template is None else abstract_like(state_template)
            items = {STATE: ocp.args.StandardRestore(template)}
            for name in (DATA, METADATA):
                if name in saved:
                    items[name] = ocp.args.JsonRestore()
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            return Restored(
                state=restored[STATE],
                data_state=_from_json(restored[DATA]) if DATA in saved else None,
                metadata=restored[METADATA] if METADATA in saved else None,
                step=step,
            )

        return self._first_readable(read, step)

    def _first_readable(self, read: Callable[[int], Any], step: Optional[int]) -> Any:
        """`read(s)` for `s = step`, or for the newest step that `read` can read."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"No checkpoint to restore in {self.directory!r}.")
        if step is not None and step not in steps:
            raise FileNotFoundError(
                f"No checkpoint for step {step} in {self.directory!r}; it holds steps {steps}."
            )
        candidates = [step] if step is not None else steps[::-1]
        problems = []
        with _without_closed_loop_noise(lambda: bool(problems)):
            for candidate in candidates:
                try:
                    if STATE not in self._saved_items(candidate):
                        raise UnreadableCheckpoint(f"it has no {STATE}/ item")
                    return read(candidate)
                except Exception as error:  # pylint: disable=broad-except
                    problems.append(_unreadable(self.directory, candidate, error, step is None))
        raise UnreadableCheckpoint(
            f"No readable checkpoint in {self.directory}: " + "; ".join(problems)
        )

    def _saved_items(self, step: int) -> set:
        """The items checkpoint `step` holds (data and metadata are optional)."""
        return {
            name
            for name in (STATE, DATA, METADATA)
            if os.path.isdir(os.path.join(self.directory, str(step), name))
        }

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "TrainCheckpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _unreadable(directory: str, step: int, error: Exception, falling_back: bool) -> str:
    """'step N: cause' for a step that failed to restore, warned about if an older one is next."""
    # Orbax raises anything from KeyError to tensorstore's ValueError for a damaged step; any
    # of them means "not this step".
    cause = " ".join(str(error).split())[:300] or type(error).__name__
    if falling_back:
        log.warning(
            "Checkpoint step %d in %s is unreadable (%s); trying an older one.",
            step,
            directory,
            cause,
        )
    return f"step {step}: {cause}"


# What tensorstore prints when the reads still in flight at a failed orbax restore complete
# after orbax has closed its event loop: one traceback per read, interleaved across threads
# mid-line ("Event loop is closed", 655 lines for one truncated step of the tiny SAM's state).
_CLOSED_LOOP_NOISE = re.compile(
    r"Traceback \(most recent call last\):"
    r'|File "[^"]*asyncio[^"]*", line \d+, in \w+'
    r"|self\._check_closed\(\)"
    r"|raise RuntimeError\('Event loop is closed'\)"
    r"|RuntimeError"
    r"|Event loop is closed"
)


class _DropFailedReads(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for the failed restore's reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Task exception was never retrieved")


@contextlib.contextmanager
def _without_closed_loop_noise(
    failed: Callable[[], bool], quiet_seconds: float = 1.0, max_wait_seconds: float = 10.0
):
    """Holds back what is written to the process's stderr (file descriptor 2, where
    tensorstore's threads print) until the end of the block, then writes it back without
    the closed-loop tracebacks of a failed restore's abandoned reads. If `failed()` says a
    restore failed in the block, it first waits for `quiet_seconds` without output, for the
    reads that were still in flight.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    asyncio_log = logging.getLogger("asyncio")
    drop = _DropFailedReads()
    asyncio_log.addFilter(drop)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            if failed():
                # The abandoned reads finish within milliseconds, later on a starved CPU.
                deadline = time.monotonic() + max_wait_seconds
                size = -1
                while size != os.fstat(held.fileno()).st_size and time.monotonic() < deadline:
                    size = os.fstat(held.fileno()).st_size
                    time.sleep(quiet_seconds)
                gc.collect()  # asyncio logs its never-retrieved task errors at collection
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            asyncio_log.removeFilter(drop)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if _CLOSED_LOOP_NOISE.sub("", line).strip(" \t:")]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
