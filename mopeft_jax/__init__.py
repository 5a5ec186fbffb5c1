"""mopeft-jax: the Segment Anything Model and a mixture of PEFTs (MoPEFT) in JAX/Flax.

The names below load on first use, so that `import mopeft_jax.data` (numpy and grain) or
`import mopeft_jax.preprocessing` does not import JAX and Flax.
"""

import importlib

_EXPORTS = {
    "AutomaticMaskGenerator": "mopeft_jax.inference.automatic_mask_generator",
    "Sam": "mopeft_jax.sam.model",
    "SamPredictor": "mopeft_jax.inference.predictor",
    "SamConfig": "mopeft_jax.sam.config",
    "PeftConfig": "mopeft_jax.peft.config",
    "load_pretrained": "mopeft_jax.pretrained",
    "save_pretrained": "mopeft_jax.pretrained",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mopeft_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
