"""Models on disk: pretrained folders, training runs and their checkpoint steps.

A *pretrained folder* (`save_pretrained`, `python -m weights_convert`, the export of a run):

    config.json     the `SamConfig` as JSON, with its PEFT layers if any
    params/         the full parameter tree, an orbax `StandardCheckpointer` checkpoint
    metadata.json   optional: where it comes from (e.g. the run and step it was exported from)

A *run folder* (`python -m experiments.train`, `mopeft_jax.experiment.train`) holds only what
training changed, and says how to rebuild the rest:

    run.json        the experiment config and how to rebuild the model: its `SamConfig`, what
                    trains, and the frozen weights' source (a pretrained folder, or the seed of
                    a random init)
    checkpoints/<step>/   trainable params, optimizer and data-iterator state (`TrainCheckpointer`)
    model/          the pretrained folder exported at the end of training (and on request)
    metrics.jsonl   one line per logged step

`load_pretrained` reads all three: a pretrained folder; a run folder (its export if that is of
the latest step, else the latest readable step); a step folder `<run>/checkpoints/<step>`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from mopeft_jax.sam.config import SamConfig

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
METADATA_FILE = "metadata.json"
RUN_FILE = "run.json"
RUN_CHECKPOINTS = "checkpoints"
RUN_EXPORT = "model"

log = logging.getLogger(__name__)


def save_pretrained(
    directory,
    config: SamConfig,
    params: Any,
    *,
    overwrite: bool = False,
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Writes `config` and `params` (and JSON `metadata`, if given) to `directory`, atomically.

    Everything is written to a temporary sibling folder first and renamed into place,
    so an interrupted save never leaves a half-written checkpoint behind.
    """
    directory = _path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; pass overwrite=True to replace it.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        params = jax.tree_util.tree_map(np.asarray, params)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / PARAMS_DIR, params)
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        if metadata is not None:
            (tmp / METADATA_FILE).write_text(json.dumps(dict(metadata), indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_pretrained(path, step: Optional[int] = None) -> Tuple[SamConfig, Any]:
    """Reads a model: a pretrained folder, a training run's folder, or one of its steps.

    Args:
      path: a folder written by `save_pretrained` (or `python -m weights_convert`); a run
        folder (`python -m experiments.train --workdir PATH`); or a step folder
        `PATH/checkpoints/<step>`. `~` and environment variables are expanded.
      step: with a run folder, the checkpoint step to load instead of the latest.

    Returns:
      (config, params): the `SamConfig` (with the PEFT layers the model was trained with) and
      the full parameter pytree (frozen SAM weights and trained ones).

    Raises:
      FileNotFoundError: nothing loadable at `path`, with what was expected and how to make it.
    """
    folder, run_step = _locate(path, step)
    if run_step is _PRETRAINED:
        config = load_config(folder)
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(folder / PARAMS_DIR)
        return config, params
    return _load_run(folder, run_step)


def load_config(path) -> SamConfig:
    """The `SamConfig` of a model on disk (any kind `load_pretrained` reads), params unread."""
    folder, run_step = _locate(path, None)
    if run_step is _PRETRAINED:
        return SamConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    return read_run(folder)[0].sam_config


_PRETRAINED = object()  # `_locate`'s marker of a pretrained folder


def _locate(path, step: Optional[int]):
    """(folder, _PRETRAINED) for a pretrained folder, else (run folder, step or None)."""
    path = _path(path)
    if step is None and (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir():
        return path, _PRETRAINED
    if (path / RUN_FILE).is_file():
        return path, step
    if path.parent.name == RUN_CHECKPOINTS and (path.parent.parent / RUN_FILE).is_file():
        if not path.name.isdigit():
            raise FileNotFoundError(f"{path} is not a checkpoint step (a number) of its run.")
        return path.parent.parent, int(path.name)
    if step is not None:
        raise FileNotFoundError(
            f"{path} is not a training run's folder (no {RUN_FILE}); only runs have steps."
        )
    raise FileNotFoundError(
        f"{path} is not a mopeft-jax checkpoint: expected {CONFIG_FILE} and {PARAMS_DIR}/ (a "
        "pretrained folder, written by save_pretrained or by converting an official checkpoint "
        f"with `python -m weights_convert SRC.pth DIR`), or {RUN_FILE} (a training run's folder, "
        f"written by `python -m experiments.train`), or a step of one ({RUN_CHECKPOINTS}/<step>)."
    )


@dataclasses.dataclass(frozen=True)
class RunModel:
    """How a training run's model is rebuilt from its checkpoints (the "model" of run.json).

    Attributes:
      sam_config: the architecture, PEFT layers included.
      trainable: what trained (`mopeft_jax.peft.TRAINABLE`); the rest is frozen.
      base: the pretrained folder the frozen weights come from, or None for a random init.
      init_seed: the seed of `Sam.init_params`, which draws the weights `base` lacks.
    """

    sam_config: SamConfig
    trainable: str
    base: Optional[str]
    init_seed: int

    def to_dict(self) -> dict:
        return {
            "sam_config": self.sam_config.to_dict(),
            "trainable": self.trainable,
            "base": self.base,
            "init_seed": self.init_seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunModel":
        return cls(SamConfig.from_dict(d["sam_config"]), d["trainable"], d["base"], d["init_seed"])

    def initial_params(self) -> Any:
        """The parameters before training: `base` (or a random init) plus fresh PEFT layers."""
        from mopeft_jax.sam.model import Sam  # pylint: disable=g-import-not-at-top

        pretrained = None
        if self.base is not None:
            if not _path(self.base).exists():
                raise FileNotFoundError(
                    f"The run's frozen weights came from {self.base}, which no longer exists; "
                    "restore it, or load the run's exported model folder instead."
                )
            pretrained = load_pretrained(self.base)[1]
        return Sam(self.sam_config).init_params(
            jax.random.key(self.init_seed), pretrained=pretrained
        )


def read_run(run_dir) -> Tuple[RunModel, dict]:
    """The `RunModel` and the experiment config (a dict) of a run folder."""
    record = json.loads((_path(run_dir) / RUN_FILE).read_text())
    return RunModel.from_dict(record["model"]), record["config"]


def write_run(run_dir, model: RunModel, config: Mapping[str, Any]) -> None:
    """Writes a run folder's run.json (atomically)."""
    run_dir = _path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps({"model": model.to_dict(), "config": dict(config)}, indent=2))
    os.replace(tmp, run_dir / RUN_FILE)


def _load_run(run_dir: pathlib.Path, step: Optional[int]) -> Tuple[SamConfig, Any]:
    """A run's model at `step` (None: its export if of the latest step, else the latest step)."""
    # Imported here: the model and the training stack are not needed to read plain folders.
    from mopeft_jax.sam.model import overlay_params  # pylint: disable=g-import-not-at-top
    from mopeft_jax.train.checkpoint import TrainCheckpointer  # pylint: disable=g-import-not-at-top

    run, _ = read_run(run_dir)
    checkpoints, export = run_dir / RUN_CHECKPOINTS, run_dir / RUN_EXPORT
    steps = []
    if checkpoints.is_dir():
        with TrainCheckpointer(checkpoints, read_only=True) as checkpointer:
            steps = checkpointer.all_steps()
    if step is None and (export / METADATA_FILE).is_file():
        exported = json.loads((export / METADATA_FILE).read_text()).get("step")
        if not steps or exported == steps[-1]:
            return load_pretrained(export)
    if not steps:
        raise FileNotFoundError(f"The run {run_dir} has no checkpoint yet.")
    with TrainCheckpointer(checkpoints, read_only=True) as checkpointer:
        trainable = checkpointer.restore(step=step).state["trainable"]
    return run.sam_config, overlay_params(run.initial_params(), trainable)


def _path(path) -> pathlib.Path:
    """`path` with `~` and environment variables expanded, absolute."""
    return pathlib.Path(os.path.expandvars(os.fspath(path))).expanduser().absolute()
