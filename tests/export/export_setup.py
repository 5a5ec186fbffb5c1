"""What the export tests share: a small SAM, its params, jitted references.

Params come from the official PyTorch SAM with random weights, converted, and numpy draws
for the PEFT layers: on this CPU, compiling `Sam.init_params` (or a random draw per leaf
shape) costs more than a test.
"""

import functools

import flax
import jax
import numpy as np
from sam_configs import SMALL_CONFIGS

from mopeft_jax import Sam
from weights_convert import load_pytorch_checkpoint
from weights_convert.official import build_official_sam

# 3 blocks (one global, windows that need padding), 4 heads, a 32-wide decoder.
CONFIG = SMALL_CONFIGS["windowed_padded"]


@functools.lru_cache(maxsize=None)
def official_sam(seed=0):
    """(official PyTorch model, our params converted from it) for CONFIG."""
    model = build_official_sam(CONFIG, seed)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    _, params = load_pytorch_checkpoint(state, decoder_num_heads=CONFIG.decoder_num_heads)
    return model, params


def sam_params(config=CONFIG, seed=0):
    """Params for `Sam(config)`: the official random SAM's, and N(0, 0.05^2) for every PEFT
    leaf, so that LoRA B and adapter Up, zero at init, are not zero here and a merge or
    fold that drops a term shows."""
    flat = flax.traverse_util.flatten_dict(official_sam()[1])
    shapes = flax.traverse_util.flatten_dict(
        jax.eval_shape(Sam(config).init_params, jax.random.key(0))
    )
    rng = np.random.RandomState(seed)
    for path, shape in sorted(shapes.items()):
        if path not in flat:
            flat[path] = (0.05 * rng.randn(*shape.shape)).astype(np.float32)
    return flax.traverse_util.unflatten_dict(flat)


def images(config=CONFIG, batch=1, seed=3):
    """Standard-normal stand-ins for normalised, padded images (B, S, S, 3)."""
    shape = (batch, config.image_size, config.image_size, 3)
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def encode(config):
    """jit of `Sam(config).encode_image`: (params, images) -> embeddings."""
    return jax.jit(
        lambda params, x: Sam(config).apply({"params": params}, x, method=Sam.encode_image)
    )


@functools.lru_cache(maxsize=None)
def decode(config):
    """jit of `Sam(config).decode`: (params, embeddings, coords, labels, boxes, masks) -> outputs."""

    def apply(params, embeddings, coords, labels, boxes, masks):
        return Sam(config).apply(
            {"params": params}, embeddings, coords, labels, boxes, masks, method=Sam.decode
        )

    return jax.jit(apply)
