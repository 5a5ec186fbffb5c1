"""Reading a checkpoint file or folder into a flat {name: numpy array} state dict."""

from __future__ import annotations

import pathlib
from typing import Dict, Mapping, Union

import numpy as np

from weights_convert.errors import CheckpointError

StateDict = Dict[str, np.ndarray]

# Files a Hugging Face `save_pretrained` folder may hold, in order of preference.
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Wrappers that training frameworks put around a state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def read_state_dict(source: Union[str, pathlib.Path, Mapping]) -> StateDict:
    """A state dict (name -> float32 numpy array) from a file, a folder or a mapping.

    Accepts a `.pth`/`.pt`/`.bin` file written by `torch.save`, a `.safetensors` file,
    a Hugging Face `save_pretrained` folder, or an in-memory state dict of torch
    tensors or numpy arrays.
    """
    if isinstance(source, Mapping):
        return _to_numpy(source, "the given state dict")
    path = pathlib.Path(source)
    if path.is_dir():
        for name in _HF_WEIGHT_FILES:
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise CheckpointError(
            f"{path} is a folder without {' or '.join(_HF_WEIGHT_FILES)}; pass an "
            "official SAM .pth file or a Hugging Face save_pretrained folder."
        )
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _to_numpy(_torch_load(path), str(path))


def _read_safetensors(path: pathlib.Path) -> StateDict:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    try:
        return _to_numpy(load_file(str(path)), str(path))
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises several types for corrupt files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_first_line(e)})."
        ) from None


def _torch_load(path: pathlib.Path):
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise CheckpointError(
            f"Reading {path} needs PyTorch: pip install 'mopeft-jax[convert]'."
        ) from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint; it may be "
            f"truncated or not a checkpoint at all ({_first_line(e)})."
        ) from None


def _to_numpy(state: Mapping, what: str) -> StateDict:
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{what} holds a {type(state).__name__}, not a state dict of tensors."
        )
    for key in _WRAPPER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    out = {}
    for name, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().float().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{what} is not a state dict of tensors: entry {name!r} is a "
                f"{type(value).__name__}."
            )
        out[str(name)] = value.astype(np.float32)
    if not out:
        raise CheckpointError(f"{what} holds no tensors.")
    return out


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
