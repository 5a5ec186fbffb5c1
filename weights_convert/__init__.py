"""Converting official PyTorch SAM checkpoints to mopeft-jax (Flax) params, and back.

    from weights_convert import load_pytorch_checkpoint
    config, params = load_pytorch_checkpoint("sam_vit_b_01ec64.pth")

or, from the shell, `python -m weights_convert sam_vit_b_01ec64.pth sam_vit_b/`, then
`mopeft_jax.load_pretrained("sam_vit_b/")`. The way back, for plain SAM or SAM with LoRA
merged (`mopeft_jax.export.merge_lora`), is `to_official_state_dict(params, config)` or
`python -m weights_convert --to-pytorch sam_vit_b/ sam_vit_b.pth`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Dict, Mapping, Tuple, Union

from mopeft_jax.sam.config import SamConfig
from weights_convert.convert import convert_params, convert_state_dict
from weights_convert.errors import CheckpointError
from weights_convert.infer import infer_config
from weights_convert.reading import read_state_dict

__all__ = ["CheckpointError", "load_pytorch_checkpoint", "detect_layout", "to_official_state_dict"]


def detect_layout(state: Mapping[str, Any]) -> str:
    """'official' (segment_anything) or 'huggingface' (transformers SamModel), by key names."""
    keys = list(state)
    if any(k.startswith("image_encoder.") for k in keys):
        return "official"
    if any(k.startswith(("vision_encoder.", "sam.vision_encoder.")) for k in keys):
        return "huggingface"
    raise CheckpointError(
        "Not a SAM checkpoint: no image_encoder.* (segment_anything) or vision_encoder.* "
        f"(Hugging Face) tensors; its first keys are {sorted(keys)[:5]}."
    )


def load_pytorch_checkpoint(
    source: Union[str, pathlib.Path, Mapping], **config_overrides
) -> Tuple[SamConfig, Any]:
    """Reads a SAM checkpoint and converts it to Flax params.

    Args:
      source: an official checkpoint (`sam_vit_b_01ec64.pth`, ...) or any state dict of
        the official model; a Hugging Face `facebook/sam-vit-*` folder, its
        model.safetensors, or a transformers state dict. The layout is told apart by
        the key names.
      **config_overrides: `SamConfig` fields to set on top of the inferred ones, e.g.
        `decoder_num_heads` (not recorded in any tensor shape), `dtype` or `attention`.

    Returns:
      (config, params): the inferred `SamConfig` and a params pytree for `Sam(config)`.

    Raises:
      CheckpointError: unreadable file, not SAM, or tensors missing, unexpected or
        mis-shaped (all of them are named).
    """
    state = read_state_dict(source)
    if detect_layout(state) == "huggingface":
        from weights_convert.huggingface import to_official  # pylint: disable=g-import-not-at-top

        state = to_official(state)
    config = infer_config(state, **config_overrides)
    return config, convert_state_dict(state, config)


def to_official_state_dict(params: Any, config: SamConfig) -> Dict[str, Any]:
    """The official `segment_anything` state dict (name -> float32 torch.Tensor) of `params`.

    The inverse of `load_pytorch_checkpoint` for the official layout: the model that
    `segment_anything`'s builders make for `config`'s sizes loads it with
    `load_state_dict(strict=True)`, and `torch.save` of it is a checkpoint for their
    `checkpoint=` argument.

    Raises:
      CheckpointError: PEFT layers left in `params` (merge LoRA first with
        `mopeft_jax.export.merge_lora`), or params that do not fit SAM with `config`.
    """
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ImportError(
            "to_official_state_dict needs PyTorch: pip install 'mopeft-jax[convert]'."
        ) from None
    return {name: torch.from_numpy(value) for name, value in convert_params(params, config).items()}
