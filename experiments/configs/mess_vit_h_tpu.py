"""MoPEFT with SAM ViT-H on a TPU pod slice (v4-32 or larger): bf16, remat, FSDP.

Run the same command on every host; `jax.distributed` finds the others on Cloud TPU.
"""

from experiments.configs import mess_vit_b_gpu


def get_config(arg: str = "mopeft"):
    config = mess_vit_b_gpu.get_config(arg)
    config.checkpoint = "checkpoints/sam_vit_h"
    config.remat = True
    config.pipeline.batch_size = 64
    config.pipeline.worker_count = 16
    config.mesh.data = -1
    config.mesh.model = 4
    config.mesh.strategy = "fsdp"
    return config
