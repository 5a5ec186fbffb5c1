"""MoPEFT on your own data with SAM ViT-B: the starting point of a fine-tuning run.

    python -m experiments.train --config finetune --workdir runs/my_data \\
        --config.checkpoint=checkpoints/sam_vit_b --config.data.name=folder:my_data \\
        --config.data.data_dir=~/tfds

On a GPU add --config.dtype=bfloat16 (parameters stay float32).
"""

from mopeft_jax.experiment.config import base_config


def get_config(arg: str = "mopeft"):
    config = base_config()
    config.checkpoint = "checkpoints/sam_vit_b"
    config.peft = arg
    config.data.name = "folder:my_data"
    config.pipeline.batch_size = 2
    config.pipeline.max_prompts = 16
    config.train.steps = 1000
    config.train.checkpoint_every = 100
    config.eval.max_images = 0  # 0: the whole split
    return config
