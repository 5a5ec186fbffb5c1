"""Every experiment config builds, and its accelerator configs trace a train step on a tiny
stand-in of the model (same PEFT, dtype, remat, loss and batch layout)."""

import importlib
import pathlib

import jax
import numpy as np
import pytest

from mopeft_jax import SamConfig
from mopeft_jax.experiment import setup

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def load(name):
    return importlib.import_module(f"experiments.configs.{name}").get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_traces_one_step_on_a_tiny_stand_in(name):
    config = load(name)
    config.checkpoint = ""  # a tiny random SAM instead of a converted ViT
    config.model = "tiny"
    # This machine has one CPU device: keep the config's strategy on a 1 x 1 mesh.
    config.mesh.data, config.mesh.model = 1, 1
    run = setup(config, abstract=True)
    assert run.model.config.dtype == config.dtype and run.model.config.remat == config.remat
    pipeline = config.pipeline
    size, low = SamConfig.tiny().image_size, run.model.config.low_res_mask_size
    b, p = pipeline.batch_size, pipeline.max_prompts
    batch = {
        "image": jax.ShapeDtypeStruct((b, size, size, 3), np.float32),
        "boxes": jax.ShapeDtypeStruct((b, p, 4), np.float32),
        "points": jax.ShapeDtypeStruct((b, p, 2), np.float32),
        "masks": jax.ShapeDtypeStruct((b, p, low, low), np.float32),
        "valid": jax.ShapeDtypeStruct((b, p), np.bool_),
        "classes": jax.ShapeDtypeStruct((b, p), np.int32),
    }
    lowered = run.step.trace(run.state, run.frozen, batch).lower()
    out_state, metrics = jax.eval_shape(run.step, run.state, run.frozen, batch)
    assert jax.tree_util.tree_structure(out_state) == jax.tree_util.tree_structure(run.state)
    assert metrics["loss"].shape == ()
    assert lowered.compiler_ir() is not None
