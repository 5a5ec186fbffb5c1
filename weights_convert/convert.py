"""Official SAM state dict -> Flax params, by a few rules on tensor kinds.

Flax modules carry the PyTorch names (`image_encoder/blocks_0/attn/qkv/kernel` is
`image_encoder.blocks.0.attn.qkv.weight`), so the source of every Flax leaf follows
from its path: list indices `name_3` become `name.3`, and the leaf kind decides
the layout change:
  Dense `kernel` (2-D):       Linear weight (out, in), transposed.
  Conv `kernel` (4-D):        Conv weight OIHW -> HWIO. A ConvTranspose weight is
                              (in, out, kH, kW); with `transpose_kernel=True` Flax
                              wants (kH, kW, out, in): the same permutation.
  LayerNorm `scale`, Embedding `embedding`: the `weight`, as is.
  anything else (bias, pos_embed, rel_pos_*, positional_encoding_*): same name, as is.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Tuple

import flax
import jax
import numpy as np

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam
from weights_convert.errors import CheckpointError, name_list
from weights_convert.reading import StateDict

_RENAMED_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
# Buffers some state dicts carry that are config, not parameters.
_CONFIG_BUFFERS = ("pixel_mean", "pixel_std")


def torch_name(path: Tuple[str, ...]) -> str:
    """Flax param path -> official state-dict key."""
    modules = [re.sub(r"_(\d+)$", r".\1", name) for name in path[:-1]]
    return ".".join(modules + [_RENAMED_LEAVES.get(path[-1], path[-1])])


def to_flax_layout(path: Tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax leaf at `path`."""
    if path[-1] == "kernel" and tensor.ndim == 2:
        return tensor.T
    if path[-1] == "kernel" and tensor.ndim == 4:
        return tensor.transpose(2, 3, 1, 0)
    return tensor


def param_shapes(config: SamConfig) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
    """Path -> shape of every parameter of `Sam(config)`, without allocating them."""
    shapes = jax.eval_shape(Sam(config).init_params, jax.random.key(0))
    return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(shapes).items()}


def convert_state_dict(state: StateDict, config: SamConfig) -> Any:
    """Flax params for `Sam(config)` from an official-layout state dict; strict.

    Every Flax param must be filled with a tensor of the right shape and every
    tensor used; otherwise one `CheckpointError` lists the missing, unexpected and
    mis-shaped names.
    """
    flat, missing, mis_shaped = {}, [], []
    used = set(name for name in _CONFIG_BUFFERS if name in state)
    for path, shape in param_shapes(config).items():
        name = torch_name(path)
        if name not in state:
            missing.append(name)
            continue
        used.add(name)
        value = to_flax_layout(path, state[name])
        if value.shape != shape:
            mis_shaped.append(
                f"{name} {tuple(state[name].shape)}, expected {_torch_shape(path, shape)}"
            )
            continue
        flat[path] = np.ascontiguousarray(value, dtype=np.float32)
    unexpected = set(state) - used
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing tensors: {name_list(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors: {name_list(unexpected)}")
        if mis_shaped:
            parts.append(f"mis-shaped tensors: {name_list(mis_shaped)}")
        raise CheckpointError(
            "The checkpoint does not fit SAM with the inferred config ("
            f"{_describe(config)}); " + "; ".join(parts) + "."
        )
    return flax.traverse_util.unflatten_dict(flat)


def _torch_shape(path: Tuple[str, ...], flax_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The PyTorch shape whose Flax layout is `flax_shape`."""
    if path[-1] == "kernel" and len(flax_shape) == 2:
        return flax_shape[::-1]
    if path[-1] == "kernel" and len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return tuple(flax_shape)


def _describe(config: SamConfig) -> str:
    return (
        f"dim {config.encoder_embed_dim}, depth {config.encoder_depth}, heads "
        f"{config.encoder_num_heads}, global blocks {list(config.encoder_global_attn_indexes)}, "
        f"image {config.image_size}, patch {config.patch_size}, window {config.window_size}"
    )
