"""The names of the PEFT submodules in a parameter tree, and what a parameter path is.

The image encoder names its PEFT layers with these constants, and training (which
parameters train), the gate read-out and the export (merging LoRA) recognise them with
the predicates below, so a renamed layer cannot silently become a frozen SAM weight.

A block of a MoPEFT encoder holds, besides SAM's own `attn`, `mlp`, `norm1`, `norm2`:

    blocks_3/lora_q/lora_a/kernel     LoRA on the query slice of qkv (and lora_v)
    blocks_3/adapter/down/kernel      the sequential adapter
    blocks_3/gate_lora_q/dense/kernel the gate of lora_q (gate_<submodule>)
    blocks_3/router/dense/kernel      the softmax router (an ablation)

and the encoder `prefix/...` (the prefix encoder shared by all blocks), `input_expert/...`
and `gate_input_expert/...`.
"""

from __future__ import annotations

from typing import Sequence

LORA_TARGETS = ("q", "v")
"""The slices of the fused qkv projection that LoRA updates."""

PREFIX = "prefix"
ADAPTER = "adapter"
INPUT_EXPERT = "input_expert"
ROUTER = "router"
GATE_PREFIX = "gate_"


def lora_name(target: str) -> str:
    """The LoRA layer of one qkv slice: "lora_q" or "lora_v"."""
    if target not in LORA_TARGETS:
        raise ValueError(f"LoRA targets are {LORA_TARGETS}, got {target!r}")
    return f"lora_{target}"


LORA_LAYERS = tuple(lora_name(t) for t in LORA_TARGETS)
PEFT_LAYERS = (*LORA_LAYERS, PREFIX, ADAPTER, INPUT_EXPERT)
"""Every module name that holds PEFT parameters (gates aside)."""


PREFIX_KV = ("prefix_k", "prefix_v")
"""The submodule names of separate prefix key and value gates (`separate_prefix_gates`)."""


def gate_name(submodule: str) -> str:
    """The gate module of a submodule: "gate_lora_q", "gate_prefix", "gate_adapter", ..."""
    return f"{GATE_PREFIX}{submodule}"


def is_gate(path: Sequence[str]) -> bool:
    """Whether a parameter path lies in a gate or the softmax router."""
    return any(name.startswith(GATE_PREFIX) or name == ROUTER for name in path)


def is_peft(path: Sequence[str]) -> bool:
    """Whether a parameter path lies in a PEFT layer (LoRA, prefix, adapter, input expert)."""
    return not is_gate(path) and any(name in PEFT_LAYERS for name in path)
