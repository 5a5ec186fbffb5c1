"""What trains: labels from parameter paths, the trainable/frozen split, the optimizer.

Every parameter gets one label from its path (the PEFT names are `mopeft_jax.peft.names`):
  "gate"     gates and the softmax router (`gate_*`, `router`),
  "peft"     PEFT layers (`lora_q`, `lora_v`, `prefix`, `adapter`, `input_expert`),
  "decoder"  the mask decoder,
  "sam"      every other SAM weight (trained only by full fine-tuning),
  "frozen"   what the config leaves frozen, and always the prompt encoder's fixed
             random-Fourier matrix (a buffer in the official model).

Gradients are taken with respect to the trainable subtree only, and the optimizer
(an `optax.multi_transform` over the labels) only ever sees that subtree, so frozen
parameters have no optimizer state and are never rewritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import flax
import optax

from mopeft_jax.peft.config import PeftConfig, check_trainable
from mopeft_jax.peft.names import is_gate, is_peft

Params = Any
LABELS = ("gate", "peft", "decoder", "sam", "frozen")
_BUFFERS = ("positional_encoding_gaussian_matrix",)


def kind_of(path: Tuple[str, ...]) -> str:
    """What a parameter is, from its path: gate, peft, decoder, buffer or sam."""
    if path[-1] in _BUFFERS:
        return "buffer"
    if is_gate(path):
        return "gate"
    if is_peft(path):
        return "peft"
    if path[0] == "mask_decoder":
        return "decoder"
    return "sam"


_TRAINS = {
    "peft": ("gate", "peft"),
    "peft+decoder": ("gate", "peft", "decoder"),
    "decoder": ("decoder",),
    "all": ("gate", "peft", "decoder", "sam"),
}


def label_params(params: Params, trainable: str = "peft") -> Params:
    """A pytree like `params` with one label of `LABELS` per leaf.

    Args:
      params: a parameter tree of `Sam`.
      trainable: what trains, one of `mopeft_jax.peft.TRAINABLE` ("peft": gates and PEFT
        layers; "all": full fine-tuning); `mopeft_jax.peft.method(name).trainable` for a
        named method.
    """
    if isinstance(trainable, PeftConfig):
        raise TypeError(
            "label_params takes what trains ('peft', 'peft+decoder', 'decoder' or 'all'), not a "
            "PeftConfig: what trains is a training choice, e.g. "
            "mopeft_jax.peft.method('full_finetune').trainable."
        )
    trains = _TRAINS[check_trainable(trainable)]
    flat = flax.traverse_util.flatten_dict(params)
    labels = {}
    for path in flat:
        kind = kind_of(path)
        labels[path] = kind if kind in trains else "frozen"
    return flax.traverse_util.unflatten_dict(labels)


def split(params: Params, labels: Params) -> Tuple[Params, Params]:
    """(trainable, frozen) subtrees of `params` by their labels."""
    flat, flat_labels = (flax.traverse_util.flatten_dict(t) for t in (params, labels))
    trainable = {k: v for k, v in flat.items() if flat_labels[k] != "frozen"}
    frozen = {k: v for k, v in flat.items() if flat_labels[k] == "frozen"}
    return tuple(flax.traverse_util.unflatten_dict(t) for t in (trainable, frozen))


def merge(trainable: Params, frozen: Params) -> Params:
    """The full parameter tree from its two disjoint halves."""
    flat = dict(flax.traverse_util.flatten_dict(frozen))
    flat.update(flax.traverse_util.flatten_dict(trainable))
    return flax.traverse_util.unflatten_dict(flat)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warm-up and cosine decay, one peak learning rate per label.

    Attributes:
      learning_rates: peak rate per trainable label ("gate", "peft", "decoder", "sam").
      weight_decay: decoupled weight decay (AdamW), on every trainable parameter.
      warmup_steps: linear warm-up from 0 to the peak.
      total_steps: steps of the cosine schedule (warm-up included).
      end_fraction: final rate as a fraction of the peak.
      grad_clip_norm: clip the global gradient norm to this, or None.
    """

    learning_rates: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"gate": 1e-3, "peft": 1e-3, "decoder": 1e-4, "sam": 1e-5}
    )
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    total_steps: int = 1000
    end_fraction: float = 0.01
    grad_clip_norm: Optional[float] = None


def make_optimizer(
    config: OptimizerConfig, trainable_labels: Params
) -> optax.GradientTransformation:
    """A partitioned AdamW over the trainable subtree (labels as `split` left them)."""
    used = set(flax.traverse_util.flatten_dict(trainable_labels).values())
    missing = used - set(config.learning_rates)
    if missing:
        raise ValueError(f"No learning rate for the trainable labels {sorted(missing)}.")
    transforms: Dict[str, optax.GradientTransformation] = {}
    for label in used:
        peak = config.learning_rates[label]
        warmup = max(config.warmup_steps, 1)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0,
            peak,
            warmup,
            max(config.total_steps, warmup + 1),
            end_value=peak * config.end_fraction,
        )
        transforms[label] = optax.adamw(schedule, weight_decay=config.weight_decay)
    optimizer = optax.multi_transform(transforms, trainable_labels)
    if config.grad_clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    return optimizer
