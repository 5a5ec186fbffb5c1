"""Which PEFT submodules an encoder gets, their sizes and their gates; the methods compared.

`PeftConfig` is architecture: it is saved with a model's config and rebuilds its parameter
tree. What trains is a training choice, not architecture: a `Method` pairs a `PeftConfig`
with what the optimizer updates, and `METHODS` names the baselines of the comparison.

Defaults follow UniPELT's code and SAM's conventions (docs/method.md); every one is a field.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

GATE_TYPES = ("sigmoid", "softmax")
ADAPTER_INITS = ("zero", "unipelt")
TRAINABLE = ("peft", "peft+decoder", "decoder", "all")
"""What a run can train: the PEFT layers and gates, those and the mask decoder, the mask
decoder only, or every weight (full fine-tuning)."""


@dataclasses.dataclass(frozen=True)
class PeftConfig:
    """The PEFT mixture of SAM's image encoder (a field `peft` of `SamConfig`).

    Attributes:
      lora: low-rank updates of the q and v slices of every block's fused qkv.
      lora_rank: rank r.
      lora_alpha: ungated LoRA is scaled by alpha / r; a gated one by its gate instead.
      prefix: learned key/value prefixes prepended in every attention (window or global).
      prefix_length: prefix vectors l per block.
      prefix_reparam: UniPELT's reparameterisation: an embedding (l, C) through one MLP
        (C -> prefix_hidden, tanh, -> depth * 2 * C) shared by all blocks; else flat
        per-block prefixes.
      prefix_hidden: hidden width of that MLP.
      adapter: a sequential bottleneck adapter on every block's output.
      adapter_reduction: bottleneck width = C // adapter_reduction.
      adapter_init: "zero" (Up is zero: the adapter starts as a no-op, so every PEFT
        starts at the zero-shot SAM) or "unipelt" (Up ~ normal(0.02), as UniPELT).
      input_expert: a low-rank residual MLP on the patch tokens before the first block
        (in the spirit of AdaLink).
      input_expert_rank: its bottleneck width.
      gated: every enabled submodule behind a learned gate (MoPEFT); else ungated.
      gate_type: "sigmoid" (independent gates, UniPELT) or "softmax" (a router whose
        weights over a block's gated submodules sum to one; an ablation).
      separate_prefix_gates: one gate for the prefix keys and one for the values
        instead of one for both.
    """

    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    prefix: bool = False
    prefix_length: int = 10
    prefix_reparam: bool = True
    prefix_hidden: int = 512
    adapter: bool = False
    adapter_reduction: int = 16
    adapter_init: str = "zero"
    input_expert: bool = False
    input_expert_rank: int = 16
    gated: bool = False
    gate_type: str = "sigmoid"
    separate_prefix_gates: bool = False

    def __post_init__(self):
        problems = []
        if self.gate_type not in GATE_TYPES:
            problems.append(f"gate_type {self.gate_type!r} is not one of {GATE_TYPES}")
        if self.adapter_init not in ADAPTER_INITS:
            problems.append(f"adapter_init {self.adapter_init!r} is not one of {ADAPTER_INITS}")
        for name in (
            "lora_rank",
            "prefix_length",
            "prefix_hidden",
            "adapter_reduction",
            "input_expert_rank",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ValueError("Invalid PeftConfig: " + "; ".join(problems) + ".")

    @property
    def submodules(self) -> Tuple[str, ...]:
        """The enabled submodules, in a fixed order."""
        names = ("lora", "prefix", "adapter", "input_expert")
        return tuple(n for n in names if getattr(self, n))

    @property
    def has_layers(self) -> bool:
        return bool(self.submodules)

    def replace(self, **changes) -> "PeftConfig":
        return dataclasses.replace(self, **changes)


def check_trainable(trainable: str) -> str:
    """Returns `trainable` if it is one of `TRAINABLE`, else raises ValueError."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable {trainable!r} is not one of {TRAINABLE}.")
    return trainable


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the comparison: the encoder's PEFT layers and what trains.

    Attributes:
      peft: the PEFT layers (architecture).
      trainable: one of `TRAINABLE` ("peft": PEFT layers and gates only).
    """

    peft: PeftConfig
    trainable: str = "peft"

    def __post_init__(self):
        check_trainable(self.trainable)


METHODS = {
    "lora": Method(PeftConfig(lora=True)),
    "prefix": Method(PeftConfig(prefix=True)),
    "adapter": Method(PeftConfig(adapter=True)),
    "input_expert": Method(PeftConfig(input_expert=True)),
    "mopeft": Method(PeftConfig(lora=True, prefix=True, adapter=True, gated=True)),
    "mopeft_plus": Method(
        PeftConfig(lora=True, prefix=True, adapter=True, input_expert=True, gated=True)
    ),
    "full_finetune": Method(PeftConfig(), trainable="all"),
    "decoder_only": Method(PeftConfig(), trainable="decoder"),
}
"""The baselines by name: single ungated PEFTs, MoPEFT (the three gated), MoPEFT with the
input expert, full fine-tuning and decoder-only fine-tuning."""

PRESETS = {name: m.peft for name, m in METHODS.items()}
"""The PEFT layers of every method, by name."""


def method(name: str) -> Method:
    """The method called `name` (a key of `METHODS`)."""
    if name not in METHODS:
        raise ValueError(f"Unknown PEFT preset {name!r}; choose one of {sorted(METHODS)}.")
    return METHODS[name]


def preset(name: str, **overrides) -> PeftConfig:
    """The PEFT layers of method `name` (lora, prefix, adapter, input_expert, mopeft,
    mopeft_plus, full_finetune, decoder_only), with `PeftConfig` fields overridden."""
    return method(name).peft.replace(**overrides)
