"""Train any method on any dataset from a config file.

    python -m experiments.train --config experiments/configs/synthetic_mopeft.py \\
        --workdir runs/mopeft_color --config.train.steps=300

Writes `metrics.jsonl` (one line per logged step) and orbax checkpoints of the trainable
parameters, optimizer state and data-iterator position under WORKDIR, and resumes from
the latest checkpoint there. A NaN loss stops the run with a clear message; the last good
state is kept as a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from mopeft_jax import Sam, SamConfig, load_pretrained
from mopeft_jax.data import DOMAINS, SyntheticSegmentation
from mopeft_jax.data.pipeline import PipelineConfig, make_dataset
from mopeft_jax.host_memory import retain_freed_memory
from mopeft_jax.peft import preset
from mopeft_jax.train import partition, sharding
from mopeft_jax.train.checkpoint import TrainCheckpointer
from mopeft_jax.train.step import LossConfig, TrainState, make_train_step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class DatasetInfo:
    """What evaluation needs to know about a dataset."""

    name: str
    domain: str
    num_classes: int
    background_class: Optional[int]
    ignore_label: int = 255


@dataclasses.dataclass
class TrainResult:
    model: Sam
    params: Any  # the full tree: frozen and trained
    trainable: Any
    frozen: Any
    history: List[Dict[str, float]]
    step_seconds: float  # median wall time of a train step after compilation


def sam_config(config: ml_collections.ConfigDict):
    """(SamConfig with the config's PEFT, pretrained plain-SAM params or None)."""
    peft = preset(config.peft, **dict(config.peft_overrides))
    numerics = dict(dtype=config.dtype, remat=config.remat, attention=config.attention)
    if config.checkpoint:
        base, params = load_pretrained(config.checkpoint)
        return base.replace(peft=peft, **numerics), params
    sizes = {
        "tiny": SamConfig.tiny,
        "vit_b": SamConfig.vit_b,
        "vit_l": SamConfig.vit_l,
        "vit_h": SamConfig.vit_h,
    }
    if config.model in sizes:
        base = sizes[config.model]()
    else:
        raise ValueError(f"Unknown model {config.model!r}: use tiny, vit_b, vit_l or vit_h.")
    return base.replace(peft=peft, **numerics), None


def dataset(config: ml_collections.ConfigDict, split: str):
    """(random-access source of {"image", "label"}, DatasetInfo) for the config's dataset."""
    data = config.data
    if data.source == "synthetic":
        spec = DOMAINS[data.name]
        source = SyntheticSegmentation(
            data.name, split, data.num_examples, data.image_size, seed=data.seed
        )
        info = DatasetInfo(
            data.name, "synthetic", spec.num_classes, spec.background_class, spec.ignore_label
        )
        return source, info
    if data.source == "mess":
        from mopeft_jax.data import mess  # pylint: disable=g-import-not-at-top

        spec = mess.get_spec(data.name)
        source = mess.data_source(data.name, split, data_dir=data.data_dir or None)
        return source, DatasetInfo(data.name, spec.domain, len(spec.classes), spec.background_class)
    if data.source == "folder":
        from mopeft_jax.data import folder  # pylint: disable=g-import-not-at-top

        source = folder.data_source(data.name, split, data_dir=data.data_dir or None)
        classes = source.dataset_info.metadata["classes"]
        background = source.dataset_info.metadata.get("background_class")
        return source, DatasetInfo(data.name, "folder", len(classes), background)
    raise ValueError(f"Unknown data.source {data.source!r}: use synthetic, mess or folder.")


def pipeline_config(config: ml_collections.ConfigDict, model_config: SamConfig) -> PipelineConfig:
    return PipelineConfig(
        image_size=model_config.image_size,
        low_res_size=model_config.low_res_mask_size,
        max_prompts=config.pipeline.max_prompts,
        prompt_kind="both",
        batch_size=config.pipeline.batch_size,
        seed=config.train.seed,
        worker_count=config.pipeline.worker_count,
        pixel_mean=model_config.pixel_mean,
        pixel_std=model_config.pixel_std,
    )


@dataclasses.dataclass
class Setup:
    """Everything a run needs before data: model, optimizer, initial state, frozen params."""

    model: Sam
    optimizer_config: partition.OptimizerConfig
    optimizer: Any  # optax.GradientTransformation
    state: TrainState
    frozen: Any
    loss_config: LossConfig


def setup(config: ml_collections.ConfigDict, params: Any = None, abstract: bool = False) -> Setup:
    """Builds the model, splits its params and creates the optimizer state.

    Args:
      config: an experiment config (see experiments/configs/common.py).
      params: plain SAM params to start from instead of the config's checkpoint or a
        random init (e.g. a SAM pretrained in the same process).
      abstract: shapes only (`jax.ShapeDtypeStruct`s), nothing allocated or computed.
    """
    model_config, pretrained = sam_config(config)
    model = Sam(model_config)
    rng = jax.random.key(config.train.seed)
    init = functools.partial(
        model.init_params, pretrained=params if params is not None else pretrained
    )
    params = jax.eval_shape(init, rng) if abstract else init(rng)
    labels = partition.label_params(params, model_config.peft)
    trainable, frozen = partition.split(params, labels)
    optimizer_config = partition.OptimizerConfig(
        learning_rates=dict(config.optimizer.learning_rates),
        weight_decay=config.optimizer.weight_decay,
        warmup_steps=config.optimizer.warmup_steps,
        total_steps=config.train.steps,
        grad_clip_norm=config.optimizer.grad_clip_norm or None,
    )
    optimizer = partition.make_optimizer(optimizer_config, partition.split(labels, labels)[0])
    loss_config = LossConfig(
        prompt=config.loss.prompt, multimask=config.loss.multimask, output=config.loss.output
    )
    create = functools.partial(TrainState.create, optimizer=optimizer)
    state = jax.eval_shape(create, trainable) if abstract else create(trainable)
    return Setup(model, optimizer_config, optimizer, state, frozen, loss_config)


def train(
    config: ml_collections.ConfigDict, workdir, *, progress: bool = True, params: Any = None
) -> TrainResult:
    """Trains `config` in `workdir`, resuming from its latest checkpoint.

    Args:
      config: an experiment config (see experiments/configs/common.py).
      workdir: where metrics.jsonl and checkpoints/ go.
      progress: show a progress bar.
      params: plain SAM params to adapt instead of the config's checkpoint/init.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = setup(config, params)
    model, state, frozen = run.model, run.state, run.frozen
    model_config = model.config

    source, _ = dataset(config, config.data.split)
    iterator = iter(make_dataset(source, pipeline_config(config, model_config)))
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.model)
    first_batch = next(iterator)
    step_fn = _jitted_step(
        model,
        run.optimizer_config,
        run.loss_config,
        state,
        frozen,
        first_batch,
        mesh,
        config.mesh.strategy,
    )
    state = sharding.place(state, sharding.tree_shardings(state, mesh, config.mesh.strategy))
    frozen = sharding.place(frozen, sharding.tree_shardings(frozen, mesh, config.mesh.strategy))

    history: List[Dict[str, float]] = []
    with TrainCheckpointer(workdir / "checkpoints") as checkpointer:
        start = 0
        if checkpointer.latest_step() is not None:
            restored = checkpointer.restore(state)
            state, start = restored.state, int(restored.state.step)
            iterator = iter(make_dataset(source, pipeline_config(config, model_config)))
            iterator.set_state(restored.data_state)
            first_batch = None
        history = _read_history(workdir / "metrics.jsonl", start)
        step_times = []
        bar = tqdm(
            range(start, config.train.steps),
            initial=start,
            total=config.train.steps,
            desc=f"train {config.peft} on {config.data.name}",
            disable=not progress,
            leave=False,
        )
        for step in bar:
            batch = first_batch if first_batch is not None else next(iterator)
            first_batch = None
            began = time.perf_counter()
            new_state, metrics = step_fn(state, frozen, sharding.shard_batch(batch, mesh))
            loss = float(metrics["loss"])
            step_times.append(time.perf_counter() - began)
            if not math.isfinite(loss):
                checkpointer.save(step, state, data_state=None, force=True)
                checkpointer.wait()
                raise TrainingDiverged(
                    f"The loss became {loss} at step {step + 1}; training stopped. The last good "
                    f"state (step {step}) is kept in {workdir / 'checkpoints'}. Lower the "
                    "learning rates or enable optimizer.grad_clip_norm."
                )
            state = new_state
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                record = {"step": done, **{k: float(v) for k, v in metrics.items()}}
                history.append(record)
                with open(workdir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{loss:.4f}")
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                checkpointer.save(done, state, data_state=iterator.get_state())
        checkpointer.wait()
    trainable = jax.device_get(state.trainable)
    frozen = jax.device_get(frozen)
    step_seconds = float(np.median(step_times[1:])) if len(step_times) > 1 else float("nan")
    return TrainResult(
        model, partition.merge(trainable, frozen), trainable, frozen, history, step_seconds
    )


_STEP_CACHE: Dict[str, Any] = {}


def _jitted_step(model, optimizer_config, loss_config, state, frozen, batch, mesh, strategy):
    """The jitted train step, shared by runs of the same model, optimizer and shapes.

    Comparisons train one method on many datasets; re-using the jitted function saves a
    compilation per run.
    """
    abstract = lambda tree: jax.eval_shape(lambda t: t, tree)  # noqa: E731
    key = repr(
        (
            model.config,
            optimizer_config,
            loss_config,
            mesh.shape,
            strategy,
            jax.tree_util.tree_structure(batch),
            abstract(batch),
        )
    )
    if key not in _STEP_CACHE:
        labels = partition.label_params(partition.merge(state.trainable, frozen), model.config.peft)
        optimizer = partition.make_optimizer(optimizer_config, partition.split(labels, labels)[0])
        step_fn, _, _ = sharding.jit_train_step(
            make_train_step(model, optimizer, loss_config),
            abstract(state),
            abstract(frozen),
            batch,
            mesh,
            strategy=strategy,
        )
        _STEP_CACHE[key] = step_fn
    return _STEP_CACHE[key]


def _read_history(path: pathlib.Path, up_to_step: int) -> List[Dict[str, float]]:
    """Metrics logged before `up_to_step` (a resumed run keeps its earlier curve)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["step"] <= up_to_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def main(argv) -> int:
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    del argv
    flags_config = config_flags.DEFINE_config_file("config", None, "experiment config file")
    flags.DEFINE_string("workdir", None, "output folder (metrics, checkpoints)")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        retain_freed_memory()  # before the first computation; see mopeft_jax.host_memory
        sharding.initialize_distributed()
        try:
            result = train(flags_config.value, flags.FLAGS.workdir)
        except TrainingDiverged as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        last = result.history[-1] if result.history else {}
        print(
            f"Done: {len(result.history)} logged steps, last loss {last.get('loss', float('nan')):.4f}; "
            f"{result.step_seconds:.3f} s/step. Metrics in {flags.FLAGS.workdir}/metrics.jsonl"
        )
        return 0

    app.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
