"""A tiny SAM and a deterministic batch of box prompts for training tests."""

import jax
import numpy as np

from mopeft_jax import Sam, SamConfig
from mopeft_jax.train import partition

TINY = SamConfig(
    encoder_embed_dim=64,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=128,
    window_size=3,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)


def tiny_batch(batch_size=2, prompts=3, seed=0):
    """Random images with one rectangle mask (and its box) per prompt; the last prompt of the
    last image is padding."""
    rng = np.random.RandomState(seed)
    low = TINY.low_res_mask_size
    scale = TINY.image_size // low
    masks = np.zeros((batch_size, prompts, low, low), np.float32)
    boxes = np.zeros((batch_size, prompts, 4), np.float32)
    for b in range(batch_size):
        for p in range(prompts):
            y0, x0 = rng.randint(0, low - 12, 2)
            h, w = rng.randint(5, 12, 2)
            masks[b, p, y0 : y0 + h, x0 : x0 + w] = 1
            boxes[b, p] = np.array([x0, y0, x0 + w, y0 + h]) * scale
    valid = np.ones((batch_size, prompts), bool)
    valid[-1, -1] = False
    return dict(
        image=rng.randn(batch_size, TINY.image_size, TINY.image_size, 3).astype(np.float32),
        boxes=boxes,
        points=boxes[..., :2] + scale * 2,
        masks=masks,
        valid=valid,
    )


def tiny_setup(peft, seed=0, learning_rates=None, total_steps=100, trainable="peft"):
    """(model, trainable, frozen, optimizer) for TINY with `peft`, from a random plain SAM;
    `trainable` says what trains (`mopeft_jax.peft.TRAINABLE`)."""
    config = TINY.replace(peft=peft)
    model = Sam(config)
    sam_params = Sam(TINY).init_params(jax.random.key(seed + 100))
    params = model.init_params(jax.random.key(seed), pretrained=sam_params)
    labels = partition.label_params(params, trainable)
    trainable, frozen = partition.split(params, labels)
    trainable_labels, _ = partition.split(labels, labels)
    rates = learning_rates or {"gate": 1e-2, "peft": 1e-2, "decoder": 1e-3, "sam": 1e-4}
    optimizer = partition.make_optimizer(
        partition.OptimizerConfig(learning_rates=rates, warmup_steps=1, total_steps=total_steps),
        trainable_labels,
    )
    return model, trainable, frozen, optimizer
