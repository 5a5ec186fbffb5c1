"""SAM's training loss (docs/method.md): focal + dice on the mask, MSE of the IoU head.

Pure ``jax.numpy`` functions, safe under ``jax.jit`` and ``jax.grad``. Mask tensors are logits
(before the sigmoid) and binary targets at the same resolution, usually SAM's low-resolution
256x256 decoder output; resizing is the caller's job.

* :func:`sigmoid_focal_loss`: torchvision's ``sigmoid_focal_loss`` formula, averaged over the
  pixels of each mask.
* :func:`dice_loss`: soft dice with +1 smoothing in numerator and denominator.
* :func:`mask_iou`: IoU of the binarised prediction, a training target (no gradient).
* :func:`sam_loss`: the per-prompt loss of the SAM paper: ``20 * focal + 1 * dice`` on the best of
  the multimask outputs (or on one fixed output) plus the MSE between the predicted and the
  measured IoU of that output, averaged over the valid (non-padding) prompts.

Losses are computed in at least float32, whatever the dtype of the logits (bf16 compute).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["dice_loss", "mask_iou", "sam_loss", "sigmoid_focal_loss"]

_PIXEL_AXES = (-2, -1)


def _as_float(logits, targets):
    """Logits and targets as one float dtype of at least 32 bits (bool targets included)."""
    logits = jnp.asarray(logits)
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    return logits.astype(dtype), jnp.asarray(targets).astype(dtype)


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0) -> jax.Array:
    """Sigmoid focal loss (Lin et al. 2017), mean over the pixels of each mask.

    The formula is torchvision's ``ops.sigmoid_focal_loss``::

        ce      = BCE_with_logits(x, t)
        p_t     = p * t + (1 - p) * (1 - t),       p = sigmoid(x)
        loss    = ce * (1 - p_t) ** gamma
        loss    = (alpha * t + (1 - alpha) * (1 - t)) * loss      # only if alpha >= 0

    with ``reduction="mean"`` taken over the two pixel axes only. It is evaluated without
    cancellation: ``ce = -t log_sigmoid(x) - (1 - t) log_sigmoid(-x)`` and
    ``1 - p_t = t sigmoid(-x) + (1 - t) sigmoid(x)``, so logits of any size (1e4 included) give
    finite values and gradients.

    Args:
      logits: (..., H, W) mask logits.
      targets: (..., H, W) targets in [0, 1] (float or bool), broadcastable to ``logits``.
      alpha: weight of the positive class in (0, 1); a negative value disables the weighting
        (as in torchvision).
      gamma: focusing exponent, >= 0.

    Returns:
      (...) the loss of each mask.
    """
    x, t = _as_float(logits, targets)
    ce = -t * jax.nn.log_sigmoid(x) - (1.0 - t) * jax.nn.log_sigmoid(-x)
    one_minus_pt = t * jax.nn.sigmoid(-x) + (1.0 - t) * jax.nn.sigmoid(x)
    # d(b ** gamma)/db is NaN at b == 0 for gamma == 0 and inf for gamma < 1; b is exactly 0 only
    # where the sigmoid saturated, where db/dx is 0 too, so the factor's gradient is taken as 0.
    positive = one_minus_pt > 0
    safe_base = jnp.where(positive, one_minus_pt, 1.0)
    zero_power = jnp.where(jnp.asarray(gamma) == 0, 1.0, 0.0).astype(x.dtype)  # 0 ** gamma
    modulation = jnp.where(positive, safe_base**gamma, zero_power)
    loss = ce * modulation
    alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
    loss = jnp.where(jnp.asarray(alpha) >= 0, alpha_t * loss, loss)
    return jnp.mean(loss, axis=_PIXEL_AXES)


def dice_loss(logits, targets, eps=1.0) -> jax.Array:
    """Soft dice loss of each mask: ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)``.

    ``p = sigmoid(logits)`` and the sums run over the pixels of one mask. ``eps = 1`` in both
    numerator and denominator is the smoothing of the dice loss in DETR / Mask2Former and in the
    SAM fine-tuning code built on them: an empty target predicted empty costs 0 rather than 0/0,
    and the loss of tiny masks is damped.

    Args:
      logits: (..., H, W) mask logits.
      targets: (..., H, W) targets in [0, 1] (float or bool), broadcastable to ``logits``.
      eps: additive smoothing.

    Returns:
      (...) the loss of each mask, in [0, 1).
    """
    x, t = _as_float(logits, targets)
    p = jax.nn.sigmoid(x)
    numerator = 2.0 * jnp.sum(p * t, axis=_PIXEL_AXES) + eps
    denominator = jnp.sum(p, axis=_PIXEL_AXES) + jnp.sum(t, axis=_PIXEL_AXES) + eps
    return 1.0 - numerator / denominator


def mask_iou(logits, targets) -> jax.Array:
    """IoU of the binarised prediction ``logits > 0`` with the target, per mask; no gradient.

    Targets are binarised at 0.5. When prediction and target are both empty (union 0) the IoU is
    1: the prediction is exactly right, and SAM's IoU head should score such a mask as perfect.

    Args:
      logits: (..., H, W) mask logits.
      targets: (..., H, W) targets in {0, 1} (float or bool), broadcastable to ``logits``.

    Returns:
      (...) IoU in [0, 1], float32 (or the logits' dtype if wider), under ``stop_gradient``.
    """
    x, t = _as_float(logits, targets)
    pred = jax.lax.stop_gradient(x) > 0
    target = jax.lax.stop_gradient(t) > 0.5
    intersection = jnp.sum(pred & target, axis=_PIXEL_AXES).astype(x.dtype)
    union = jnp.sum(pred | target, axis=_PIXEL_AXES).astype(x.dtype)
    iou = jnp.where(union > 0, intersection / jnp.maximum(union, 1.0), 1.0)
    return jax.lax.stop_gradient(iou)


def sam_loss(
    mask_logits,
    iou_pred,
    gt_masks,
    valid,
    *,
    focal_weight=20.0,
    dice_weight=1.0,
    iou_weight=1.0,
    multimask: bool = True,
    output: Optional[int] = None,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """SAM's training loss for B images x P prompts, averaged over the valid prompts.

    For each prompt and output m: ``mask_loss[m] = focal_weight * focal + dice_weight * dice``.
    As in the SAM paper, of the M outputs of a prompt only the one with the lowest mask loss is
    back-propagated (the choice itself carries no gradient; ties go to the first); with M == 1
    that output. With ``output=k`` every prompt trains its output ``k`` instead, e.g. the one an
    evaluation reads (MESS reads the first multimask output). The IoU head is trained on the
    chosen output only, with the squared error between its ``iou_pred`` and the measured
    :func:`mask_iou` of that output. Per prompt::

        loss = mask_loss[chosen] + iou_weight * (iou_pred[chosen] - mask_iou[chosen]) ** 2

    and the total is the mean over prompts with ``valid`` set. Padding prompts are replaced by
    zeros before anything is computed, so whatever they hold (NaN included) they change neither
    the loss nor any gradient, and their inputs get exactly zero gradient. With no valid prompt
    the loss and all metrics are 0.

    Args:
      mask_logits: (B, P, M, H, W) mask logits (SAM's low-resolution masks).
      iou_pred: (B, P, M) the IoU head's predictions.
      gt_masks: (B, P, H, W) ground-truth masks in {0, 1} (float or bool) at the logits' H, W.
      valid: (B, P) bool, True for real prompts.
      focal_weight, dice_weight, iou_weight: loss weights (SAM: 20, 1, 1).
      multimask: whether the decoder returned several outputs per prompt; if False, M must be 1.
      output: None to train the best of the M outputs of each prompt; an index in [0, M) to
        train that output of every prompt.

    Returns:
      ``(loss, metrics)``: the scalar loss and a dict of scalars, each a mean over the valid
      prompts of the chosen output: ``focal``, ``dice``, ``iou_mse`` (unweighted) and ``iou``
      (the measured IoU).
    """
    mask_logits = jnp.asarray(mask_logits)
    iou_pred = jnp.asarray(iou_pred)
    gt_masks = jnp.asarray(gt_masks)
    valid = jnp.asarray(valid).astype(bool)
    if mask_logits.ndim != 5:
        raise ValueError(f"mask_logits must be (B, P, M, H, W), got shape {mask_logits.shape}")
    b, p, m, h, w = mask_logits.shape
    if iou_pred.shape != (b, p, m):
        raise ValueError(f"iou_pred must be {(b, p, m)}, got shape {iou_pred.shape}")
    if gt_masks.shape != (b, p, h, w):
        raise ValueError(f"gt_masks must be {(b, p, h, w)}, got shape {gt_masks.shape}")
    if valid.shape != (b, p):
        raise ValueError(f"valid must be {(b, p)}, got shape {valid.shape}")
    if not multimask and m != 1:
        raise ValueError(f"multimask=False expects one output per prompt, got M={m}")
    if output is not None and not 0 <= output < m:
        raise ValueError(f"output={output} is not one of the M={m} outputs per prompt")

    dtype = jnp.promote_types(mask_logits.dtype, jnp.float32)
    # Zeroing padding prompts first (rather than only masking their loss) keeps NaN/inf there out
    # of the backward pass: 0 * NaN would otherwise leak into the gradient.
    mask_logits = jnp.where(valid[:, :, None, None, None], mask_logits.astype(dtype), 0.0)
    iou_pred = jnp.where(valid[:, :, None], iou_pred.astype(dtype), 0.0)
    gt_masks = jnp.where(valid[:, :, None, None], gt_masks.astype(dtype), 0.0)

    targets = gt_masks[:, :, None]  # (B, P, 1, H, W), broadcast over the M outputs
    focal = sigmoid_focal_loss(mask_logits, targets)  # (B, P, M)
    dice = dice_loss(mask_logits, targets)  # (B, P, M)
    measured_iou = mask_iou(mask_logits, targets)  # (B, P, M)
    mask_loss = focal_weight * focal + dice_weight * dice

    if output is None:
        chosen = jnp.argmin(jax.lax.stop_gradient(mask_loss), axis=-1)[..., None]  # (B, P, 1)
    else:
        chosen = jnp.full((b, p, 1), output)

    def pick(x):
        # Gather of the chosen output: the backward pass sends zero to the other outputs.
        return jnp.take_along_axis(x, chosen, axis=-1)[..., 0]  # (B, P)

    iou_error = (pick(iou_pred) - pick(measured_iou)) ** 2
    per_prompt = pick(mask_loss) + iou_weight * iou_error

    weights = valid.astype(dtype)
    count = jnp.maximum(jnp.sum(weights), 1.0)

    def mean_over_valid(x):
        return jnp.sum(jnp.where(valid, x, 0.0)) / count

    loss = mean_over_valid(per_prompt)
    metrics = {
        "focal": mean_over_valid(pick(focal)),
        "dice": mean_over_valid(pick(dice)),
        "iou_mse": mean_over_valid(iou_error),
        "iou": mean_over_valid(pick(measured_iou)),
    }
    return loss, jax.lax.stop_gradient(metrics)
