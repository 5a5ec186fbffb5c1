"""mopeft-jax: the Segment Anything Model and a mixture of PEFTs (MoPEFT) in JAX/Flax."""

from mopeft_jax.checkpoint import load_pretrained, save_pretrained
from mopeft_jax.inference import AutomaticMaskGenerator, SamPredictor
from mopeft_jax.peft import PeftConfig
from mopeft_jax.sam import Sam, SamConfig

__all__ = [
    "Sam",
    "SamConfig",
    "PeftConfig",
    "load_pretrained",
    "save_pretrained",
    "SamPredictor",
    "AutomaticMaskGenerator",
]
