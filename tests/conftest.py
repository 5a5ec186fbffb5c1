"""Shared test setup.

`segment_anything` imports torchvision at package import (for its automatic mask
generator and PIL-based resizing), though its model code never uses it. Where
torchvision is not installed, empty stand-ins are registered so that the official
model code imports (SPEC §3); calling them fails loudly.
"""

import importlib.util
import sys
import types

import jax


def _register_torchvision_stub():
    def unavailable(*args, **kwargs):
        raise RuntimeError(
            "torchvision is not installed; this stand-in only lets segment_anything import."
        )

    modules = {
        "torchvision": {},
        "torchvision.ops": {},
        "torchvision.ops.boxes": {"batched_nms": unavailable, "box_area": unavailable},
        "torchvision.transforms": {},
        "torchvision.transforms.functional": {"resize": unavailable, "to_pil_image": unavailable},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


if importlib.util.find_spec("torchvision") is None:
    _register_torchvision_stub()

# Parity is checked in float32 at full precision.
jax.config.update("jax_default_matmul_precision", "highest")
