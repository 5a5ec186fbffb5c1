"""The PEFT mixture: LoRA, prefix tuning, adapters and an input expert behind gates.

Generic layers; nothing here imports `mopeft_jax.sam`, `train` or `data`. The SAM
image encoder hosts them as its `SamConfig.peft` asks.
"""

from mopeft_jax.peft.config import PRESETS, PeftConfig, preset
from mopeft_jax.peft.gates import Gate, Router
from mopeft_jax.peft.layers import Bottleneck, LoRA, PrefixEncoder

__all__ = [
    "PeftConfig",
    "PRESETS",
    "preset",
    "Gate",
    "Router",
    "LoRA",
    "Bottleneck",
    "PrefixEncoder",
]
