"""The PEFT mixture: LoRA, prefix tuning, adapters and an input expert behind gates.

Generic layers; nothing here imports `mopeft_jax.sam`, `train` or `data`. The SAM
image encoder hosts them as its `SamConfig.peft` asks.
"""

from mopeft_jax.peft import names
from mopeft_jax.peft.config import METHODS, PRESETS, TRAINABLE, Method, PeftConfig, method, preset
from mopeft_jax.peft.gates import Gate, Router
from mopeft_jax.peft.layers import Bottleneck, LoRA, PrefixEncoder

__all__ = [
    "METHODS",
    "Method",
    "PeftConfig",
    "PRESETS",
    "TRAINABLE",
    "method",
    "names",
    "preset",
    "Gate",
    "Router",
    "LoRA",
    "Bottleneck",
    "PrefixEncoder",
]
