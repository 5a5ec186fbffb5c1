"""MoPEFT on a MESS dataset with SAM ViT-B on one or more GPUs (bf16 compute).

    python -m weights_convert sam_vit_b_01ec64.pth checkpoints/sam_vit_b
    python -m experiments.train --config mess_vit_b_gpu --workdir runs/vit_b_bdd \\
        --config.data.name=mess:bdd100k --config.data.data_dir=~/tfds
"""

from mopeft_jax.experiment.config import base_config


def get_config(arg: str = "mopeft"):
    config = base_config()
    config.checkpoint = "checkpoints/sam_vit_b"
    config.peft = arg
    config.dtype = "bfloat16"
    config.remat = False
    config.data.name = "mess:bdd100k"
    config.pipeline.batch_size = 8  # global: split over the "data" axis
    config.pipeline.max_prompts = 16
    config.pipeline.worker_count = 8
    config.train.steps = 2000
    config.train.checkpoint_every = 500
    config.mesh.data = -1
    config.mesh.model = 1
    config.mesh.strategy = "replicate"
    config.eval.max_images = 0  # 0: the whole split
    return config
