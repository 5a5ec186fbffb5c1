"""Hugging Face `transformers` SAM state dict -> official `segment_anything` layout.

A transformers `SamModel` (the `facebook/sam-vit-*` checkpoints) holds exactly the
tensors of the official model, in the same layouts, under other names. No tensor is
split, fused, reshaped, transposed or rescaled: the ViT `qkv` stays one fused
Linear, `pos_embed` stays (1, h, w, C), rel-pos tables, ConvTranspose weights and
the Fourier matrix are stored as in the official model. What differs:

* Top-level names: `vision_encoder` is the official `image_encoder`, and its blocks
  are `layers.i` rather than `blocks.i`. A `SamModel` nested in another model has
  every key prefixed `sam.` (its base-model prefix).
* `nn.Sequential` containers became named submodules (the activations, which hold
  no tensors, left gaps in the official numbering):
    image_encoder.neck.{0,1,2,3}            <- neck.{conv1,layer_norm1,conv2,layer_norm2}
    prompt_encoder.mask_downscaling.{0,1,3,4,6}
                                            <- mask_embed.{conv1,layer_norm1,conv2,layer_norm2,conv3}
    mask_decoder.output_upscaling.{0,1,3}   <- upscale_conv1, upscale_layer_norm, upscale_conv2
* The decoder MLP heads (`iou_prediction_head`, `output_hypernetworks_mlps.j`) keep
  their n Linears as `layers.0..n-1` officially; transformers names the first
  `proj_in`, the last `proj_out` and the n-2 in between `layers.0..n-3`.
* Small renames: LayerNorms `norm1`, `norm2`, ..., `norm_final_attn` are called
  `layer_norm*`; `patch_embed.proj` is `patch_embed.projection`; the prompt
  encoder's `point_embeddings.k` are `point_embed.k`.
* The random-Fourier positional encoding: the official model has one buffer,
  `prompt_encoder.pe_layer.positional_encoding_gaussian_matrix` (2, D/2), used both
  for the prompts and for the dense image positional encoding. transformers gives
  each use its own module, `shared_image_embedding` and
  `prompt_encoder.shared_embedding`, whose `positional_embedding` parameters are
  tied (one tensor). `state_dict()` lists it under both names; `save_pretrained`
  writes it once. Both names carry the official matrix unchanged; when both are
  present they must be equal, and one of them is dropped as a duplicate.
* transformers has no `pixel_mean`/`pixel_std` buffers (they are preprocessing
  config, defaults in `SamConfig`).

Any key matched by no rule passes through unchanged, so the strict check of the
official path reports it as unexpected.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from weights_convert.errors import CheckpointError
from weights_convert.reading import StateDict

# The two tied names of the Fourier matrix in transformers, and its official name.
_HF_POSITIONAL = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
_OFFICIAL_POSITIONAL = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# Prefix of a SamModel nested inside another transformers model.
_NESTED_PREFIX = "sam."

Rule = Tuple["re.Pattern[str]", Union[str, Callable[["re.Match[str]"], str]]]


def _numbered(hf_parent: str, official_parent: str, **children: int) -> Rule:
    """A rule renaming the named children of `hf_parent` to `official_parent.<index>`."""
    pattern = re.compile(rf"^{re.escape(hf_parent)}\.({'|'.join(children)})\.")
    return pattern, lambda m: f"{official_parent}.{children[m.group(1)]}."


# Applied in order, each to the result of the previous ones (all anchored, so a
# rule acts at most once on a key).
_RULES: List[Rule] = [
    (re.compile(r"^vision_encoder\."), "image_encoder."),
    (re.compile(r"^image_encoder\.layers\."), "image_encoder.blocks."),
    (re.compile(r"^image_encoder\.patch_embed\.projection\."), "image_encoder.patch_embed.proj."),
    _numbered(
        "image_encoder.neck", "image_encoder.neck", conv1=0, layer_norm1=1, conv2=2, layer_norm2=3
    ),
    _numbered(
        "prompt_encoder.mask_embed",
        "prompt_encoder.mask_downscaling",
        conv1=0,
        layer_norm1=1,
        conv2=3,
        layer_norm2=4,
        conv3=6,
    ),
    _numbered(
        "mask_decoder",
        "mask_decoder.output_upscaling",
        upscale_conv1=0,
        upscale_layer_norm=1,
        upscale_conv2=3,
    ),
    (re.compile(r"^prompt_encoder\.point_embed\."), "prompt_encoder.point_embeddings."),
    # Only the block and decoder LayerNorms are left by now (neck, mask_embed and
    # upscale ones were renumbered above).
    (re.compile(r"\.layer_norm(\d|_final_attn)\."), r".norm\1."),
]

# A Linear of a decoder MLP head: (head, proj_in | proj_out | layers.k).
_MLP_LINEAR = re.compile(
    r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))"
    r"\.(proj_in|proj_out|layers\.(\d+))\."
)


def to_official(state: StateDict) -> StateDict:
    """A transformers `SamModel` state dict with the official names (tensors as they are).

    Raises:
      CheckpointError: the two copies of the tied positional embedding differ, or
        two source tensors would land on the same official name.
    """
    tensors, source = _strip_nested_prefix(state)
    out: StateDict = {}
    origin: Dict[str, str] = {}  # official name -> source name, for error messages

    def put(official: str, name: str) -> None:
        if official in out:
            raise CheckpointError(
                f"Two tensors of the Hugging Face checkpoint, {origin[official]!r} "
                f"and {source[name]!r}, both map to the official {official!r}."
            )
        out[official], origin[official] = tensors[name], source[name]

    copies = [name for name in _HF_POSITIONAL if name in tensors]
    if len(copies) == 2:
        a, b = (tensors[name] for name in copies)
        if not np.array_equal(a, b):
            detail = (
                f"max |difference| {np.abs(a - b).max():.3g}"
                if a.shape == b.shape
                else f"shapes {a.shape} and {b.shape}"
            )
            raise CheckpointError(
                f"The Hugging Face checkpoint's {source[copies[0]]!r} and {source[copies[1]]!r} are "
                f"one tied positional embedding and must be equal, but differ ({detail})."
            )
    if copies:
        # A second copy is the same tied tensor written twice: a duplicate, not a parameter.
        put(_OFFICIAL_POSITIONAL, copies[0])

    head_depths = _mlp_head_depths(tensors)
    for name in tensors:
        if name not in _HF_POSITIONAL:
            put(_official_name(name, head_depths), name)
    return out


def _strip_nested_prefix(state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """The state dict without the `sam.` prefix, and each new name's source name."""
    tensors, source = {}, {}
    for key, value in state.items():
        name = key[len(_NESTED_PREFIX) :] if key.startswith(_NESTED_PREFIX) else key
        if name in tensors:
            raise CheckpointError(
                f"The Hugging Face checkpoint holds both {source[name]!r} and "
                f"{key!r}; it is ambiguous which one is the model's."
            )
        tensors[name], source[name] = value, key
    return tensors, source


def _mlp_head_depths(state: StateDict) -> Dict[str, int]:
    """Number of Linears (proj_in, layers.*, proj_out) of each decoder MLP head."""
    hidden: Dict[str, set] = {}
    for name in state:
        m = _MLP_LINEAR.match(name)
        if m:
            indices = hidden.setdefault(m.group(1), set())
            if m.group(3) is not None:
                indices.add(int(m.group(3)))
    return {head: (max(indices) + 1 if indices else 0) + 2 for head, indices in hidden.items()}


def _official_name(name: str, head_depths: Dict[str, int]) -> str:
    """The official key of a transformers key (without the `sam.` prefix)."""
    for pattern, replacement in _RULES:
        name = pattern.sub(replacement, name)

    def renumber(m: "re.Match[str]") -> str:
        head, linear, hidden = m.group(1), m.group(2), m.group(3)
        if linear == "proj_in":
            index = 0
        elif linear == "proj_out":
            index = head_depths[head] - 1
        else:
            index = int(hidden) + 1
        return f"{head}.layers.{index}."

    return _MLP_LINEAR.sub(renumber, name)
