"""A training run from an experiment config: its folder is a model, and it survives failures.

    from mopeft_jax.experiment import base_config, train
    result = train(config, "runs/x")                  # resumes if runs/x has checkpoints
    config, params = mopeft_jax.load_pretrained("runs/x")   # SAM + the trained PEFT layers

The run folder (`mopeft_jax.pretrained` documents its layout) holds run.json (the config and how
to rebuild the model), metrics.jsonl, checkpoints/<step>/ (trainable params, optimizer and
the position in the data stream) and, unless `train.export` is off, model/ (a pretrained folder
of the whole model, written at the end and every `train.export_every` steps).

Failures a researcher meets, and what a rerun of the same command does:
- killed at any point: resumes bit-identically from the latest checkpoint;
- a NaN or infinite loss: the run stops with `TrainingDiverged`, keeping the last good state
  (data iterator included) as a checkpoint; the advice it gives (lower learning rates, gradient
  clipping) can be followed in the same folder: the optimizer may change on resume;
- a damaged checkpoint step: it is named in a warning and the previous readable step is used;
- a truncated last line of metrics.jsonl: dropped;
- a config that is not the folder's (another model, method or dataset): `ConfigMismatch` names the
  fields that differ.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import time
from typing import Any, Dict, List, Optional

import jax
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from mopeft_jax.data.pipeline import batch_spec, make_dataset
from mopeft_jax.experiment import config as config_lib
from mopeft_jax.pretrained import (
    RUN_CHECKPOINTS,
    RUN_EXPORT,
    RUN_FILE,
    RunModel,
    read_run,
    save_pretrained,
    write_run,
)
from mopeft_jax.sam.model import Sam
from mopeft_jax.train import partition, sharding
from mopeft_jax.train.checkpoint import TrainCheckpointer
from mopeft_jax.train.step import LossConfig, TrainState, make_train_step

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_BATCHES = "batches"  # a checkpoint's data state: the batches the run has consumed

# Fields that make a run folder what it is. Resuming with any of them changed would mix two
# experiments in one folder; the optimizer, the number of steps and logging may change.
IDENTITY_FIELDS = (
    "checkpoint",
    "model",
    "peft",
    "peft_overrides",
    "trainable",
    "dtype",
    "data.name",
    "data.split",
    "data.num_examples",
    "data.image_size",
    "data.seed",
    "pipeline.batch_size",
    "pipeline.max_prompts",
    "loss",
    "train.seed",
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class ConfigMismatch(ValueError):
    """A config that differs from the run folder's in fields that define the run."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run leaves in memory (its folder holds the same, on disk).

    Attributes:
      model: the `Sam` module (with the run's PEFT layers).
      params: the full parameter tree, frozen and trained.
      trainable, frozen: its two halves.
      history: the logged metrics, one dict per logged step.
      step_seconds: median wall time of a train step after compilation (NaN if none ran).
      workdir: the run folder.
    """

    model: Sam
    params: Any
    trainable: Any
    frozen: Any
    history: List[Dict[str, float]]
    step_seconds: float
    workdir: pathlib.Path


@dataclasses.dataclass
class Setup:
    """Everything a run builds before its first step, each thing once.

    Attributes:
      model: the `Sam` module.
      run_model: how the run's model is rebuilt from its checkpoints.
      optimizer: the partitioned AdamW over the trainable parameters.
      loss_config: the loss's settings.
      state: the initial `TrainState` (placed on the mesh unless abstract).
      frozen: the frozen parameters (placed on the mesh unless abstract).
      mesh: the device mesh.
      step: the jitted, sharded train step.
    """

    model: Sam
    run_model: RunModel
    optimizer: optax.GradientTransformation
    loss_config: LossConfig
    state: Any
    frozen: Any
    mesh: Any
    step: Any


def setup(config: ml_collections.ConfigDict, abstract: bool = False) -> Setup:
    """Builds the model, its parameters, the optimizer, the initial state and the jitted step.

    Args:
      config: an experiment config (`mopeft_jax.experiment.base_config`).
      abstract: shapes only (`jax.ShapeDtypeStruct`s): nothing loaded, allocated or placed.
    """
    sam_config, base = config_lib.model_config(config)
    run_model = RunModel(sam_config, config_lib.trainable(config), base, config.train.seed)
    params = jax.eval_shape(run_model.initial_params) if abstract else initial_params(run_model)
    labels = partition.label_params(params, run_model.trainable)
    trainable, frozen = partition.split(params, labels)
    optimizer_config = config_lib.optimizer_config(config)
    optimizer = partition.make_optimizer(optimizer_config, partition.split(labels, labels)[0])
    create = functools.partial(TrainState.create, optimizer=optimizer)
    state = jax.eval_shape(create, trainable) if abstract else create(trainable)

    model = Sam(sam_config)
    loss_config = config_lib.loss_config(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    spec = batch_spec(config_lib.pipeline_config(config, sam_config))
    step = _jitted_step(
        model,
        run_model.trainable,
        _hashable(optimizer_config),
        loss_config,
        mesh,
        config.mesh.strategy,
        tuple((key, shape, dtype) for key, (shape, dtype) in spec.items()),
    )
    if not abstract:
        state = sharding.place(state, sharding.tree_shardings(state, mesh, config.mesh.strategy))
        frozen = sharding.place(frozen, sharding.tree_shardings(frozen, mesh, config.mesh.strategy))
    return Setup(model, run_model, optimizer, loss_config, state, frozen, mesh, step)


def initial_params(run_model: RunModel) -> Any:
    """`run_model.initial_params()`, kept for the next run of the same model.

    A comparison trains one method on several datasets in a row, each run from the same
    initial params; building them loads the base checkpoint and compiles the initializers of
    the PEFT layers (3-4 s of CPU for the tiny SAM each time), once per method with this
    cache. The base folder's identity (inode and modification time) is part of the key, so a
    checkpoint rewritten in place is read again. Nothing modifies params in place.
    """
    stamp = None
    if run_model.base is not None and os.path.exists(run_model.base):
        info = os.stat(run_model.base)
        stamp = (info.st_ino, info.st_mtime_ns)
    return _cached_initial_params(run_model, stamp)


@functools.lru_cache(maxsize=2)  # a comparison's two workers (compare.workers) each keep one
def _cached_initial_params(run_model: RunModel, stamp) -> Any:
    del stamp  # only a cache key
    return run_model.initial_params()


def _hashable(optimizer_config: partition.OptimizerConfig):
    """The optimizer config with its learning-rate dict as sorted items (a cache key)."""
    return dataclasses.replace(
        optimizer_config, learning_rates=tuple(sorted(optimizer_config.learning_rates.items()))
    )


@functools.lru_cache(maxsize=16)
def _jitted_step(model, trainable, optimizer_config, loss_config, mesh, strategy, batch_key):
    """The jitted train step, shared by every run of the same model, optimizer and shapes.

    A comparison trains each method on several datasets of one shape: they share one
    compilation.
    """
    optimizer_config = dataclasses.replace(
        optimizer_config, learning_rates=dict(optimizer_config.learning_rates)
    )
    params = jax.eval_shape(model.init_params, jax.random.key(0))
    labels = partition.label_params(params, trainable)
    abstract_trainable, abstract_frozen = partition.split(params, labels)
    optimizer = partition.make_optimizer(optimizer_config, partition.split(labels, labels)[0])
    state = jax.eval_shape(
        functools.partial(TrainState.create, optimizer=optimizer), abstract_trainable
    )
    batch = {key: jax.ShapeDtypeStruct(shape, dtype) for key, shape, dtype in batch_key}
    step, _, _ = sharding.jit_train_step(
        make_train_step(model, optimizer, loss_config),
        state,
        abstract_frozen,
        batch,
        mesh,
        strategy=strategy,
    )
    return step


def train(config: ml_collections.ConfigDict, workdir, *, progress: bool = True) -> TrainResult:
    """Trains `config` in `workdir`, resuming from its latest readable checkpoint.

    Args:
      config: an experiment config (`mopeft_jax.experiment.base_config`).
      workdir: the run folder (created if missing); `~` and environment variables expand.
      progress: show a progress bar.

    Raises:
      ConfigMismatch: `workdir` holds a run of another experiment.
      TrainingDiverged: the loss became NaN or infinite (the last good state is kept).
    """
    workdir = pathlib.Path(config_lib.expand_path(str(workdir))).absolute()
    saved_config = _check_config(config, workdir)
    run = setup(config)
    dataset = config_lib.dataset(config)
    pipeline = config_lib.pipeline_config(config, run.model.config, dataset.info.ignore_label)
    # Written once everything is built: a run that failed to start leaves no record to match.
    write_run(workdir, run.run_model, config.to_dict())
    state, frozen = run.state, run.frozen
    writer = _tensorboard(workdir) if config.train.tensorboard else None

    with TrainCheckpointer(workdir / RUN_CHECKPOINTS) as checkpointer:
        start, batches = 0, 0
        if checkpointer.all_steps():
            state, data_state = _resume(checkpointer, state, run, config, saved_config)
            start, batches = int(state.step), data_state[_BATCHES]
        # Every batch is a function of its position in the stream: resuming needs its count.
        iterator = iter(make_dataset(dataset.source, pipeline, start_batch=batches))
        history = _read_history(workdir / METRICS_FILE, start)
        step_times: List[float] = []
        bar = tqdm(
            range(start, config.train.steps),
            initial=start,
            total=config.train.steps,
            desc=f"train {config.peft} on {config.data.name}",
            disable=not progress,
            leave=False,
        )
        warned_empty = False
        for step in bar:
            host_batch = next(iterator)
            batches += 1
            if not warned_empty and not host_batch["valid"].any():
                warned_empty = True
                log.warning(
                    "Step %d trains on a batch without any prompt: its labels have no segment "
                    "of %d pixels or more (all 'ignore'?). Such batches give a zero loss.",
                    step + 1,
                    pipeline.min_pixels,
                )
            batch = sharding.shard_batch(host_batch, run.mesh)
            began = time.perf_counter()
            new_state, metrics = run.step(state, frozen, batch)
            loss = float(metrics["loss"])
            step_times.append(time.perf_counter() - began)
            if not math.isfinite(loss):
                raise TrainingDiverged(_diverged(checkpointer, step, loss, workdir))
            state = new_state
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                record = {"step": done, **{k: float(v) for k, v in metrics.items()}}
                history.append(record)
                with open(workdir / METRICS_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        writer.add_scalar(key, value, done)
                bar.set_postfix(loss=f"{loss:.4f}")
            every = config.train.checkpoint_every
            if (every and done % every == 0) or done == config.train.steps:
                checkpointer.save(done, state, data_state={_BATCHES: batches})
            export_every = config.train.export_every
            due = done == config.train.steps or (export_every and done % export_every == 0)
            if config.train.export and due:
                _export(workdir, run, state, frozen, done)
        checkpointer.wait()
    if writer is not None:
        writer.close()
    trainable = jax.device_get(state.trainable)
    frozen = jax.device_get(frozen)
    step_seconds = float(np.median(step_times[1:])) if len(step_times) > 1 else float("nan")
    return TrainResult(
        run.model,
        partition.merge(trainable, frozen),
        trainable,
        frozen,
        history,
        step_seconds,
        workdir,
    )


def _check_config(config, workdir: pathlib.Path) -> Optional[dict]:
    """The config a run folder was trained with (None if nothing was trained in it yet);
    raises if it differs in the fields that define the run."""
    if not (workdir / RUN_FILE).is_file() or not (workdir / RUN_CHECKPOINTS).is_dir():
        return None
    _, saved = read_run(workdir)
    new = config.to_dict()
    differ = [
        f"{field}={_field(saved, field)!r} (this config: {_field(new, field)!r})"
        for field in IDENTITY_FIELDS
        if _field(saved, field) != _field(new, field)
    ]
    if differ:
        raise ConfigMismatch(
            f"{workdir} holds a run trained with " + "; ".join(differ) + ". Use another "
            "--workdir, or the folder's own config."
        )
    return saved


def _field(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return json.loads(json.dumps(config))  # ConfigDict leaves (tuples, ...) as JSON has them


def _resume(checkpointer, state, run: Setup, config, saved_config):
    """(state, data state) of the newest readable checkpoint.

    With the optimizer changed since the checkpoint (e.g. gradient clipping enabled after a
    NaN stop), its state does not fit the new optimizer: the trained parameters and the data
    position are restored and the optimizer starts afresh.
    """
    new_optimizer = config.to_dict()["optimizer"]
    if saved_config is None or _field(saved_config, "optimizer") == _field(
        {"optimizer": new_optimizer}, "optimizer"
    ):
        restored = checkpointer.restore(state, require_data=True)
        return restored.state, restored.data_state
    restored = checkpointer.restore(None, require_data=True)
    log.warning(
        "The optimizer config differs from the one this run was trained with; resuming from "
        "step %d with the trained parameters and a fresh optimizer state.",
        restored.step,
    )
    trainable = jax.tree_util.tree_map(
        lambda template, value: np.asarray(value, template.dtype),
        state.trainable,
        restored.state["trainable"],
    )
    fresh = TrainState.create(trainable, run.optimizer).replace(step=np.int32(restored.step))
    shardings = sharding.tree_shardings(fresh, run.mesh, config.mesh.strategy)
    return sharding.place(fresh, shardings), restored.data_state


def _diverged(checkpointer, step: int, loss: float, workdir: pathlib.Path) -> str:
    """Keeps the checkpoints of states whose loss was finite; returns the message to stop with.

    The state that step `step` started from gave the non-finite loss, so the update before
    it went wrong: its checkpoint, if saved, goes. A checkpoint of an earlier state was the
    input of a step with a finite loss, and a rerun resumes from the newest of them (replaying
    the update with the lowered learning rate or the clipping that the message advises).
    """
    for saved in checkpointer.all_steps():
        if saved >= step:
            checkpointer.delete(saved)
    kept = checkpointer.all_steps()
    where = (
        f"The last good checkpoint (step {kept[-1]}) is kept in {workdir / RUN_CHECKPOINTS}"
        if kept
        else "No checkpoint precedes it: a rerun starts from the beginning"
    )
    return (
        f"The loss became {loss} at step {step + 1}; training stopped. {where}. Lower the "
        "learning rates (config.optimizer.learning_rates) or clip gradients "
        "(config.optimizer.grad_clip_norm), then rerun in the same workdir."
    )


def _export(workdir: pathlib.Path, run: Setup, state, frozen, step: int) -> None:
    """Writes WORKDIR/model: the whole model after `step`, a folder `load_pretrained` reads."""
    params = partition.merge(jax.device_get(state.trainable), jax.device_get(frozen))
    metadata = {"step": step, "run": str(workdir)}
    save_pretrained(
        workdir / RUN_EXPORT, run.model.config, params, overwrite=True, metadata=metadata
    )


def _read_history(path: pathlib.Path, up_to_step: int) -> List[Dict[str, float]]:
    """Metrics logged up to `up_to_step` (a resumed run keeps its curve).

    A line cut short by a kill is dropped; the file is rewritten with the kept lines.
    """
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise ValueError(f"{path}, line {number}, is not JSON: {line[:80]!r}") from None
            log.warning("Dropping the unfinished last line of %s: %r", path, line[:80])
    kept = [r for r in records if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _tensorboard(workdir: pathlib.Path):
    """A TensorBoard writer in WORKDIR/tensorboard (the `tensorboard` extra: tensorboardX)."""
    try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ImportError(
            "config.train.tensorboard needs tensorboardX: pip install 'mopeft-jax[tensorboard]'"
        ) from None
    return SummaryWriter(str(workdir / "tensorboard"))
