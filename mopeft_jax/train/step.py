"""The train step: SAM's loss on sampled prompts, gradients of the trainable subtree only.

A batch is a dict of arrays:
  image   (B, S, S, 3) float32, normalised and padded (`sam.transforms.preprocess`);
  boxes   (B, P, 4) prompts as x0, y0, x1, y1 in input-frame pixels, and/or
  points  (B, P, 2) one positive point per prompt, (x, y) in input-frame pixels;
  masks   (B, P, 4h, 4w) the ground-truth mask of each prompt at the decoder's
          low resolution (256x256 for SAM), in the padded input frame;
  valid   (B, P) bool, False for padding prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from mopeft_jax.peft.gates import gate_values
from mopeft_jax.sam.model import Sam
from mopeft_jax.train.loss import sam_loss
from mopeft_jax.train.partition import merge

Params = Any
Batch = Dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of SAM's loss and the prompts it is computed on.

    Attributes:
      prompt: "box" or "point": which prompt of the batch the decoder gets.
      multimask: decode the three ambiguity-aware masks and train the best one (SAM);
        else the single-mask output.
      output: with `multimask`, train this one of the three outputs for every prompt instead
        of the best (0: the output the MESS evaluation reads); None for the best.
      focal_weight, dice_weight, iou_weight: 20 : 1 : 1 as in SAM.
    """

    prompt: str = "box"
    multimask: bool = True
    output: Optional[int] = None
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0

    def __post_init__(self):
        if self.prompt not in ("box", "point"):
            raise ValueError(f"LossConfig.prompt must be 'box' or 'point', got {self.prompt!r}.")


class TrainState(flax.struct.PyTreeNode):
    """What changes during training: the step, the trainable params and the optimizer state."""

    step: jax.Array
    trainable: Params
    opt_state: optax.OptState

    @classmethod
    def create(cls, trainable: Params, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(
            step=jnp.zeros((), jnp.int32), trainable=trainable, opt_state=optimizer.init(trainable)
        )


def predict_masks(model: Sam, params: Params, batch: Batch, loss_config: LossConfig):
    """Mask logits (B, P, M, 4h, 4w), IoU (B, P, M) and the gate values of a batch.

    Each image is encoded once; its P prompts are decoded against that one embedding.
    """
    variables = {"params": params}
    embeddings, state = model.apply(
        variables, batch["image"], method=Sam.encode_image, mutable=["gates"]
    )

    def decode(embedding, prompts):
        if loss_config.prompt == "box":
            prompt_args = {"boxes": prompts}
        else:
            prompt_args = {
                "point_coords": prompts[:, None, :],
                "point_labels": jnp.ones(prompts.shape[:1] + (1,), jnp.int32),
            }
        return model.apply(
            variables,
            embedding[None],
            method=Sam.decode,
            multimask_output=loss_config.multimask,
            **prompt_args,
        )

    prompts = batch["boxes"] if loss_config.prompt == "box" else batch["points"]
    masks, iou = jax.vmap(decode)(embeddings, prompts)
    return masks, iou, gate_values(state)


def loss_and_metrics(
    trainable: Params, frozen: Params, batch: Batch, model: Sam, loss_config: LossConfig
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """SAM's loss on a batch and its metrics (loss terms, measured IoU, mean gate values)."""
    masks, iou, gates = predict_masks(model, merge(trainable, frozen), batch, loss_config)
    loss, metrics = sam_loss(
        masks,
        iou,
        batch["masks"],
        batch["valid"],
        focal_weight=loss_config.focal_weight,
        dice_weight=loss_config.dice_weight,
        iou_weight=loss_config.iou_weight,
        multimask=loss_config.multimask,
        output=loss_config.output,
    )
    metrics = dict(metrics, loss=loss)
    metrics.update({f"gate/{name}": value.mean() for name, value in gates.items()})
    return loss, metrics


def make_train_step(
    model: Sam, optimizer: optax.GradientTransformation, loss_config: LossConfig = LossConfig()
) -> Callable:
    """`step(state, frozen, batch) -> (state, metrics)`, to be wrapped in `jax.jit`.

    Gradients are taken with respect to `state.trainable` only: the frozen weights get
    no weight gradients, no optimizer state, and come out of the step untouched.
    """

    def step(state: TrainState, frozen: Params, batch: Batch):
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        (_, metrics), grads = grad_fn(state.trainable, frozen, batch, model, loss_config)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
        return new_state, metrics

    return step
