"""Saving and loading a converted SAM (config + params) as an orbax checkpoint folder.

Layout of a folder written by `save_pretrained`:
  config.json   the `SamConfig` as JSON
  params/       the parameter pytree, an orbax `StandardCheckpointer` checkpoint
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from mopeft_jax.sam.config import SamConfig

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_pretrained(directory, config: SamConfig, params: Any, *, overwrite: bool = False) -> None:
    """Writes `config` and `params` to `directory`, atomically.

    Everything is written to a temporary sibling folder first and renamed into place,
    so an interrupted save never leaves a half-written checkpoint behind.
    """
    directory = pathlib.Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists; pass overwrite=True to replace it.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        params = jax.tree_util.tree_map(np.asarray, params)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / PARAMS_DIR, params)
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_pretrained(directory) -> Tuple[SamConfig, Any]:
    """Reads a folder written by `save_pretrained` (or `python -m weights_convert`).

    Returns:
      (config, params): the `SamConfig` and the parameter pytree of numpy-backed jax arrays.
    """
    directory = pathlib.Path(directory).absolute()
    config_file, params_dir = directory / CONFIG_FILE, directory / PARAMS_DIR
    if not config_file.is_file() or not params_dir.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a mopeft-jax checkpoint: expected {CONFIG_FILE} and {PARAMS_DIR}/ in "
            "it. Convert an official SAM checkpoint with `python -m weights_convert SRC.pth "
            f"{directory}`."
        )
    config = SamConfig.from_dict(json.loads(config_file.read_text()))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(params_dir)
    return config, params
