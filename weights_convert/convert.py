"""Official SAM state dict <-> Flax params, by a few rules on tensor kinds.

Flax modules carry the PyTorch names (`image_encoder/blocks_0/attn/qkv/kernel` is
`image_encoder.blocks.0.attn.qkv.weight`), so the source of every Flax leaf follows
from its path: list indices `name_3` become `name.3`, and the leaf kind decides
the layout change (inverted for the way back, `convert_params`):
  Dense `kernel` (2-D):       Linear weight (out, in), transposed.
  Conv `kernel` (4-D):        Conv weight OIHW -> HWIO. A ConvTranspose weight is
                              (in, out, kH, kW); with `transpose_kernel=True` Flax
                              wants (kH, kW, out, in): the same permutation.
  LayerNorm `scale`, Embedding `embedding`: the `weight`, as is.
  anything else (bias, pos_embed, rel_pos_*, positional_encoding_*): same name, as is.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import numpy as np

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam
from mopeft_jax.train.partition import kind_of
from weights_convert.errors import CheckpointError, name_list
from weights_convert.reading import StateDict

_RENAMED_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
# Flax kernel axes as a permutation of the PyTorch weight's, by rank: Linear (out, in) ->
# (in, out); Conv OIHW -> HWIO (and a ConvTranspose's (in, out, kH, kW) -> (kH, kW, out, in)).
_KERNEL_AXES = {2: (1, 0), 4: (2, 3, 1, 0)}
# Buffers some state dicts carry that are config, not parameters.
_CONFIG_BUFFERS = ("pixel_mean", "pixel_std")


def torch_name(path: Tuple[str, ...]) -> str:
    """Flax param path -> official state-dict key."""
    modules = [re.sub(r"_(\d+)$", r".\1", name) for name in path[:-1]]
    return ".".join(modules + [_RENAMED_LEAVES.get(path[-1], path[-1])])


def _flax_axes(path: Tuple[str, ...], ndim: int) -> Optional[Tuple[int, ...]]:
    """The PyTorch axes that the Flax leaf at `path` has, in order; None if the same."""
    return _KERNEL_AXES.get(ndim) if path[-1] == "kernel" else None


def to_flax_layout(path: Tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax leaf at `path`."""
    axes = _flax_axes(path, tensor.ndim)
    return tensor if axes is None else tensor.transpose(axes)


def to_torch_layout(path: Tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """The Flax leaf at `path` in the layout of its PyTorch tensor (inverse of `to_flax_layout`)."""
    axes = _flax_axes(path, value.ndim)
    return value if axes is None else value.transpose(np.argsort(axes))


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


def convert_params(params: Any, config: SamConfig) -> StateDict:
    """The official state dict (name -> float32 numpy array) of plain SAM params; strict.

    The inverse of `convert_state_dict`: `segment_anything`'s model for `config` loads it
    with `load_state_dict(strict=True)`. PEFT layers and gates have no place in it: merge
    ungated LoRA first (`mopeft_jax.export.merge_lora`); the others cannot be merged.

    Raises:
      CheckpointError: PEFT layers or gates in `params` (named), or params missing,
        unexpected or mis-shaped for plain SAM with `config`'s sizes (all named).
    """
    flat = flax.traverse_util.flatten_dict(params)
    peft = {_peft_module(path) for path in flat if kind_of(path) in ("gate", "peft")}
    if peft:
        raise CheckpointError(
            f"The params have PEFT layers, which the official SAM has no place for: "
            f"{name_list(peft)}. Merge LoRA first with mopeft_jax.export.merge_lora (ungated "
            "LoRA only); gates, prefixes, adapters and the input expert cannot be merged."
        )
    expected = param_shapes(config.replace(peft=None))
    names = lambda paths: ["/".join(p) for p in paths]  # noqa: E731
    missing = names(set(expected) - set(flat))
    unexpected = names(set(flat) - set(expected))
    mis_shaped = [
        f"{'/'.join(path)} {tuple(flat[path].shape)}, expected {shape}"
        for path, shape in expected.items()
        if path in flat and tuple(flat[path].shape) != tuple(shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = [
            f"{what} params: {name_list(found)}"
            for what, found in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", mis_shaped),
            )
            if found
        ]
        raise CheckpointError(
            f"The params do not fit SAM with the given config ({_describe(config)}); "
            + "; ".join(parts)
            + "."
        )
    return {
        torch_name(path): np.ascontiguousarray(
            to_torch_layout(path, np.asarray(flat[path], np.float32))
        )
        for path in expected
    }


def _peft_module(path: Tuple[str, ...]) -> str:
    """The '/'-joined path of the PEFT layer or gate that the leaf at `path` belongs to."""
    depth = next(i for i in range(1, len(path) + 1) if kind_of(path[:i]) in ("gate", "peft"))
    return "/".join(path[:depth])


def _torch_shape(path: Tuple[str, ...], flax_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The PyTorch shape whose Flax layout is `flax_shape`."""
    axes = _flax_axes(path, len(flax_shape))
    return tuple(flax_shape) if axes is None else tuple(flax_shape[i] for i in np.argsort(axes))


def _describe(config: SamConfig) -> str:
    return (
        f"dim {config.encoder_embed_dim}, depth {config.encoder_depth}, heads "
        f"{config.encoder_num_heads}, global blocks {list(config.encoder_global_attn_indexes)}, "
        f"image {config.image_size}, patch {config.patch_size}, window {config.window_size}"
    )
