"""MoPEFT on one shifted synthetic domain with the tiny SAM (random weights unless
--config.checkpoint points at a pretrained one, e.g. the demo's cache)."""

from mopeft_jax.experiment.config import base_config


def get_config():
    config = base_config()
    config.peft = "mopeft"
    config.data.name = "synthetic:color_shift"
    config.pipeline.worker_count = 0  # 128-pixel scenes: cheaper than starting a worker process
    return config
