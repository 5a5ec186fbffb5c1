"""SAM inference as its users know it: a predictor that encodes an image once and answers many
prompts, and an automatic mask generator, with the official `segment_anything` semantics."""

from mopeft_jax.inference.automatic_mask_generator import AutomaticMaskGenerator
from mopeft_jax.inference.masks import overlay_masks
from mopeft_jax.inference.predictor import SamPredictor

__all__ = ["AutomaticMaskGenerator", "SamPredictor", "overlay_masks"]
