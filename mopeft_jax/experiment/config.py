"""The experiment config: every field a run reads, its defaults, and the typed configs made of it.

An experiment file (`experiments/configs/<name>.py`) defines `get_config()` that starts from
`base_config()` and changes what it needs; the command line overrides any field:

    python -m experiments.train --config experiments/configs/synthetic_mopeft.py \\
        --workdir runs/x --config.peft=lora --config.train.steps=200

Path fields (`checkpoint`, `data.data_dir`) expand `~` and environment variables.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import ml_collections

from mopeft_jax.data.pipeline import PipelineConfig
from mopeft_jax.data.registry import IGNORE_LABEL, Dataset, load_dataset
from mopeft_jax.peft import method, preset
from mopeft_jax.pretrained import load_config
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.train.partition import OptimizerConfig
from mopeft_jax.train.step import LossConfig

MODEL_SIZES = {
    "tiny": SamConfig.tiny,
    "vit_b": SamConfig.vit_b,
    "vit_l": SamConfig.vit_l,
    "vit_h": SamConfig.vit_h,
}


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment config has, with its default."""
    config = ml_collections.ConfigDict()
    # The model: a pretrained folder (`python -m weights_convert`, `save_pretrained`, a run
    # folder), or "" for the size `model` ("tiny", "vit_b", "vit_l", "vit_h") with random weights.
    config.checkpoint = ""
    config.model = "tiny"
    config.dtype = "float32"  # "bfloat16" on GPU/TPU (parameters stay float32)
    config.remat = False
    config.attention = "auto"
    # A method (lora, prefix, adapter, input_expert, mopeft, mopeft_plus, full_finetune,
    # decoder_only), overrides of its PeftConfig fields, and what trains ("" for the method's
    # own: the PEFT layers and gates; everything for full_finetune; see peft.TRAINABLE).
    config.peft = "mopeft"
    config.peft_overrides = ml_collections.ConfigDict()
    config.trainable = ""

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic:color_shift"  # kind:name (synthetic:, mess:, folder:)
    config.data.split = "train"
    config.data.data_dir = ""  # where prepared tfds datasets live (mess:, folder:)
    config.data.num_examples = 256  # synthetic only
    config.data.image_size = 128  # synthetic only: the generated image side
    config.data.seed = 0  # synthetic only

    config.pipeline = ml_collections.ConfigDict()
    config.pipeline.batch_size = 4
    config.pipeline.max_prompts = 8
    # Processes preparing batches; -1 (auto): one per host core but one, at least 1 and up to 8
    # (0: in the training process). At 1024x1024 a core prepares about 11 images/s.
    config.pipeline.worker_count = -1

    config.loss = ml_collections.ConfigDict()
    config.loss.prompt = "box"  # what the decoder gets in training: "box" or "point"
    config.loss.multimask = True
    # Train the first multimask output, the one the MESS evaluation reads (None: SAM's best of
    # three). With the best of three, which output learns a box is left to chance and the
    # evaluated one can get worse while the loss falls.
    config.loss.output = 0
    # SAM's weights: 20 focal : 1 dice : 1 IoU-head MSE.
    config.loss.focal_weight = 20.0
    config.loss.dice_weight = 1.0
    config.loss.iou_weight = 1.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rates = ml_collections.ConfigDict(
        dict(gate=1e-3, peft=1e-3, decoder=1e-4, sam=1e-5)
    )
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 20
    config.optimizer.grad_clip_norm = 1.0  # 0: no clipping

    config.train = ml_collections.ConfigDict()
    config.train.steps = 200
    config.train.seed = 0
    config.train.log_every = 10
    config.train.checkpoint_every = 50  # 0: at the end only
    # Export the whole model as WORKDIR/model (a pretrained folder) at the end, and every
    # export_every steps (0: at the end only). Without it the run folder is still a model
    # (load_pretrained reads its checkpoint); the export costs about 2 s of orbax per write.
    config.train.export = True
    config.train.export_every = 0
    config.train.tensorboard = False  # also write WORKDIR/tensorboard (extra: tensorboard)

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.model = 1
    config.mesh.strategy = "replicate"  # or "fsdp"

    config.eval = ml_collections.ConfigDict()
    config.eval.prompt = "box"  # the oracle prompts: "box" or "point"
    config.eval.split = ""  # "": the dataset's evaluation split
    config.eval.max_images = 32  # 0: every image
    # Prompts decoded per call (an image's prompts are padded up to it, cut into chunks of it
    # if more): MESS's images have up to 100; a dataset with fewer per image decodes faster
    # with a bucket that fits them.
    config.eval.prompt_bucket = 100
    return config


def expand_path(path: str) -> str:
    """A path field with `~` and environment variables expanded ("" stays "")."""
    return os.path.expanduser(os.path.expandvars(path)) if path else ""


def trainable(config: ml_collections.ConfigDict) -> str:
    """What trains: `config.trainable`, or the method's own."""
    return config.trainable or method(config.peft).trainable


def model_config(config: ml_collections.ConfigDict) -> Tuple[SamConfig, Optional[str]]:
    """(the SamConfig with the config's PEFT layers and numerics, the base checkpoint or None).

    The architecture comes from the checkpoint's config where there is one, else from
    `config.model`.
    """
    peft = preset(config.peft, **dict(config.peft_overrides))
    numerics = dict(dtype=config.dtype, remat=config.remat, attention=config.attention)
    checkpoint = expand_path(config.checkpoint)
    if checkpoint:
        base = load_config(checkpoint)
        if base.peft is not None and base.peft.has_layers:
            raise ValueError(
                f"checkpoint {checkpoint} has PEFT layers ({', '.join(base.peft.submodules)}); "
                "start a run from a plain SAM, or merge them first (mopeft_jax.export)."
            )
        return base.replace(peft=peft, **numerics), os.path.abspath(checkpoint)
    if config.model not in MODEL_SIZES:
        raise ValueError(
            f"Unknown model {config.model!r}: use one of {', '.join(MODEL_SIZES)}, or set "
            "checkpoint to a converted SAM."
        )
    return MODEL_SIZES[config.model]().replace(peft=peft, **numerics), None


def dataset(config: ml_collections.ConfigDict, split: Optional[str] = None) -> Dataset:
    """The config's dataset (`config.data.name`), split `split` (None: `config.data.split`)."""
    data = config.data
    return load_dataset(
        data.name,
        split or data.split,
        data_dir=expand_path(data.data_dir) or None,
        num_examples=data.num_examples,
        image_size=data.image_size,
        seed=data.seed,
    )


def pipeline_config(
    config: ml_collections.ConfigDict, sam: SamConfig, ignore_label: int = IGNORE_LABEL
) -> PipelineConfig:
    """The input pipeline of a run: the model's input and mask sizes, the loss's prompts, the
    dataset's ignore label."""
    return PipelineConfig(
        image_size=sam.image_size,
        low_res_size=sam.low_res_mask_size,
        max_prompts=config.pipeline.max_prompts,
        prompt_kind=config.loss.prompt,
        ignore_label=ignore_label,
        batch_size=config.pipeline.batch_size,
        seed=config.train.seed,
        worker_count=worker_count(config.pipeline.worker_count),
        pixel_mean=sam.pixel_mean,
        pixel_std=sam.pixel_std,
    )


def worker_count(requested: int) -> int:
    """Pipeline processes: `requested`, or for -1 one per core this process may use but one
    (left to the training process), at least 1 and at most 8."""
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


def optimizer_config(config: ml_collections.ConfigDict) -> OptimizerConfig:
    return OptimizerConfig(
        learning_rates=dict(config.optimizer.learning_rates),
        weight_decay=config.optimizer.weight_decay,
        warmup_steps=config.optimizer.warmup_steps,
        total_steps=config.train.steps,
        grad_clip_norm=config.optimizer.grad_clip_norm or None,
    )


def loss_config(config: ml_collections.ConfigDict) -> LossConfig:
    return LossConfig(
        prompt=config.loss.prompt,
        multimask=config.loss.multimask,
        output=config.loss.output,
        focal_weight=config.loss.focal_weight,
        dice_weight=config.loss.dice_weight,
        iou_weight=config.loss.iou_weight,
    )
