"""MoPEFT with SAM ViT-L on 8 GPUs: data parallel x 2-way FSDP, bf16, rematerialised blocks."""

from experiments.configs import mess_vit_b_gpu


def get_config(arg: str = "mopeft"):
    config = mess_vit_b_gpu.get_config(arg)
    config.checkpoint = "checkpoints/sam_vit_l"
    config.remat = True
    config.pipeline.batch_size = 16
    config.mesh.data = 4
    config.mesh.model = 2
    config.mesh.strategy = "fsdp"
    return config
