"""SAM in Flax: config, image encoder, prompt encoder, mask decoder, transforms."""

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam

__all__ = ["SamConfig", "Sam"]
