"""SAM's training loss (mopeft_jax/train/loss.py) against torch formulas and hand values."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mopeft_jax.train.loss import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss

# Compiled once per shape: op-by-op eager dispatch (a compilation per primitive on first use) is
# what would dominate this module's run time.
FOCAL = jax.jit(sigmoid_focal_loss)
FOCAL_GRAD = jax.jit(
    jax.grad(lambda x, t, alpha, gamma: sigmoid_focal_loss(x, t, alpha, gamma).sum())
)
FOCAL_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(lambda x, t: sigmoid_focal_loss(x, t).sum()))
DICE = jax.jit(dice_loss)
DICE_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(lambda x, t: dice_loss(x, t).sum()))
MASK_IOU = jax.jit(mask_iou)
MASK_IOU_GRAD = jax.jit(jax.grad(lambda x, t: mask_iou(x, t).sum()))
SAM_LOSS = jax.jit(sam_loss, static_argnames=("multimask", "output"))
SAM_VALUE_AND_GRAD = jax.jit(
    jax.value_and_grad(sam_loss, argnums=(0, 1), has_aux=True),
    static_argnames=("multimask", "output"),
)


def torch_focal(logits, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's published formula, mean over the last two axes."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss.mean(dim=(-2, -1))


def torch_dice(logits, targets, eps=1.0):
    p = torch.sigmoid(logits)
    numerator = 2 * (p * targets).sum(dim=(-2, -1)) + eps
    denominator = p.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1)) + eps
    return 1 - numerator / denominator


def numpy_iou(logits, targets):
    pred = np.asarray(logits) > 0
    target = np.asarray(targets) > 0.5
    inter = (pred & target).sum(axis=(-2, -1))
    union = (pred | target).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def random_case(seed, shape):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    targets = (rng.random(shape) < 0.3).astype(np.float32)
    return logits, targets


# ---------------------------------------------------------------------------------------------
# focal


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (-1.0, 2.0), (0.25, 0.0)])
def test_focal_matches_torch_value_and_gradient(alpha, gamma):
    logits, targets = random_case(0, (2, 3, 7, 9))
    got = FOCAL(logits, targets, alpha=alpha, gamma=gamma)
    assert got.shape == (2, 3)

    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = torch_focal(x, torch.tensor(targets, dtype=torch.float64), alpha, gamma)
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-5, atol=1e-7)

    ref.sum().backward()
    grad = FOCAL_GRAD(logits, targets, alpha, gamma)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-4, atol=1e-8)


def test_focal_soft_targets_match_torch():
    logits, _ = random_case(1, (4, 5, 6))
    soft = np.random.default_rng(2).random((4, 5, 6)).astype(np.float32)
    got = FOCAL(logits, soft)
    ref = torch_focal(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(soft, dtype=torch.float64)
    )
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5)


def test_focal_by_hand():
    # logits 0: p = 0.5, ce = ln 2, (1 - p_t)^2 = 1/4. Target 1 has alpha_t 0.25, target 0 0.75.
    logits = jnp.zeros((2, 1))
    targets = jnp.array([[1.0], [0.0]])
    expected = (0.25 * 0.25 + 0.75 * 0.25) * math.log(2) / 2
    np.testing.assert_allclose(FOCAL(logits, targets), expected, rtol=1e-6)

    # Logit ln 3 on a positive pixel: p = 3/4, ce = ln(4/3), (1 - p_t)^2 = 1/16, alpha_t = 1/4.
    one = FOCAL(jnp.full((1, 1), math.log(3.0)), jnp.ones((1, 1)))
    np.testing.assert_allclose(one, 0.25 / 16 * math.log(4 / 3), rtol=1e-6)


def test_focal_accepts_bool_targets():
    logits, targets = random_case(3, (3, 4, 4))
    np.testing.assert_allclose(FOCAL(logits, targets.astype(bool)), FOCAL(logits, targets))


# ---------------------------------------------------------------------------------------------
# dice


def test_dice_matches_torch_value_and_gradient():
    logits, targets = random_case(4, (2, 3, 8, 5))
    got = DICE(logits, targets)
    assert got.shape == (2, 3)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = torch_dice(x, torch.tensor(targets, dtype=torch.float64))
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-5, atol=1e-7)
    ref.sum().backward()
    grad = DICE_VALUE_AND_GRAD(logits, targets)[1]
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-4, atol=1e-9)


def test_dice_by_hand():
    # p = 1/2 everywhere on 2x2, one positive pixel: 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 1/2.
    targets = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(DICE(jnp.zeros((2, 2)), targets), 0.5, rtol=1e-6)
    # Without smoothing: 1 - 1 / 3.
    np.testing.assert_allclose(DICE(jnp.zeros((2, 2)), targets, eps=0.0), 2 / 3, rtol=1e-6)
    # A saturated perfect prediction costs 0, the exact complement costs 1 - 1 / (1 + 3 + 1).
    perfect = 50.0 * (2 * targets - 1)
    np.testing.assert_allclose(DICE(perfect, targets), 0.0, atol=1e-6)
    np.testing.assert_allclose(DICE(-perfect, targets), 1 - 1 / 5, rtol=1e-6)
    # Both empty: (0 + 1) / (0 + 0 + 1) -> loss 0 instead of 0/0.
    np.testing.assert_allclose(DICE(jnp.full((2, 2), -50.0), jnp.zeros((2, 2))), 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# mask IoU


def test_mask_iou_by_hand():
    logits = jnp.array(
        [
            [[1.0, -1.0], [1.0, 1.0]],  # pred {00, 10, 11}, target {00, 01, 11}: 2 / 4
            [[-1.0, -1.0], [-1.0, -1.0]],  # both empty: defined as 1
            [[-1.0, -1.0], [-1.0, -1.0]],  # empty prediction, non-empty target: 0
            [[0.0, 2.0], [0.0, 0.0]],  # logit exactly 0 is background: pred {01} = target
        ]
    )
    targets = jnp.array(
        [
            [[1, 1], [0, 1]],
            [[0, 0], [0, 0]],
            [[0, 1], [0, 0]],
            [[0, 1], [0, 0]],
        ],
        dtype=bool,
    )
    np.testing.assert_allclose(MASK_IOU(logits, targets), [0.5, 1.0, 0.0, 1.0])


def test_mask_iou_matches_numpy_and_has_no_gradient():
    logits, targets = random_case(5, (3, 4, 6, 6))
    np.testing.assert_allclose(MASK_IOU(logits, targets), numpy_iou(logits, targets), rtol=1e-6)
    grad = MASK_IOU_GRAD(logits, targets)
    np.testing.assert_array_equal(grad, 0.0)


# ---------------------------------------------------------------------------------------------
# sam_loss


def reference_prompt_loss(logits, iou_pred, gt, focal_weight=20.0, dice_weight=1.0, iou_weight=1.0):
    """The loss of one prompt's output, computed with the torch formulas and numpy IoU."""
    x = torch.tensor(np.asarray(logits), dtype=torch.float64)
    t = torch.tensor(np.asarray(gt), dtype=torch.float64)
    focal = torch_focal(x, t).item()
    dice = torch_dice(x, t).item()
    iou = float(numpy_iou(logits, gt))
    return focal_weight * focal + dice_weight * dice + iou_weight * (iou_pred - iou) ** 2


def multimask_case(seed=0, b=2, p=3, m=3, hw=8, best=2):
    """gt masks; output ``best`` is a noisy copy of gt, the others are noise or the complement."""
    rng = np.random.default_rng(seed)
    gt = (rng.random((b, p, hw, hw)) < 0.4).astype(np.float32)
    gt[..., 0, 0] = 1.0  # every gt mask non-empty
    signed = 2 * gt - 1
    logits = np.empty((b, p, m, hw, hw), np.float32)
    for k in range(m):
        if k == best:
            logits[:, :, k] = 4.0 * signed + 0.5 * rng.standard_normal((b, p, hw, hw))
        elif k % 2 == 0:
            logits[:, :, k] = -3.0 * signed  # the complement
        else:
            logits[:, :, k] = 2.0 * rng.standard_normal((b, p, hw, hw))
    iou_pred = rng.random((b, p, m)).astype(np.float32)
    return logits, iou_pred, gt


def test_sam_loss_picks_lowest_mask_loss_output():
    logits, iou_pred, gt = multimask_case(best=2)
    valid = np.ones(gt.shape[:2], bool)
    loss, metrics = SAM_LOSS(logits, iou_pred, gt, valid)

    b, p = valid.shape
    per_prompt = [
        reference_prompt_loss(logits[i, j, 2], iou_pred[i, j, 2], gt[i, j])
        for i in range(b)
        for j in range(p)
    ]
    np.testing.assert_allclose(loss, np.mean(per_prompt), rtol=1e-5)

    x = torch.tensor(logits[:, :, 2], dtype=torch.float64)
    t = torch.tensor(gt, dtype=torch.float64)
    iou = numpy_iou(logits[:, :, 2], gt)
    np.testing.assert_allclose(metrics["focal"], torch_focal(x, t).mean().item(), rtol=1e-5)
    np.testing.assert_allclose(metrics["dice"], torch_dice(x, t).mean().item(), rtol=1e-5)
    np.testing.assert_allclose(metrics["iou"], iou.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["iou_mse"], ((iou_pred[:, :, 2] - iou) ** 2).mean(), rtol=1e-5
    )

    grads = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid)[1]
    g_logits, g_iou = np.asarray(grads[0]), np.asarray(grads[1])
    np.testing.assert_array_equal(g_logits[:, :, :2], 0.0)
    np.testing.assert_array_equal(g_iou[:, :, :2], 0.0)
    assert np.all(np.abs(g_logits[:, :, 2]).sum(axis=(-2, -1)) > 0)
    # d/dpred mean((pred - iou)^2) = 2 (pred - iou) / N, the IoU target carrying no gradient.
    np.testing.assert_allclose(g_iou[:, :, 2], 2 * (iou_pred[:, :, 2] - iou) / (b * p), rtol=1e-5)


def test_sam_loss_choice_is_per_prompt():
    logits, iou_pred, gt = multimask_case(seed=1, b=1, p=2, m=3, best=2)
    # Move prompt 1's good output to slot 1.
    logits[0, 1, [1, 2]] = logits[0, 1, [2, 1]]
    loss, _ = SAM_LOSS(logits, iou_pred, gt, np.ones((1, 2), bool))
    expected = (
        reference_prompt_loss(logits[0, 0, 2], iou_pred[0, 0, 2], gt[0, 0])
        + reference_prompt_loss(logits[0, 1, 1], iou_pred[0, 1, 1], gt[0, 1])
    ) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_sam_loss_trains_the_output_it_is_given_not_the_best():
    logits, iou_pred, gt = multimask_case(seed=8, best=2)
    valid = np.ones(gt.shape[:2], bool)
    (loss, _), (g_logits, g_iou) = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid, output=0)
    expected = np.mean(
        [
            reference_prompt_loss(logits[i, j, 0], iou_pred[i, j, 0], gt[i, j])
            for i in range(2)
            for j in range(3)
        ]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(g_logits)[:, :, 1:], 0.0)
    np.testing.assert_array_equal(np.asarray(g_iou)[:, :, 1:], 0.0)
    assert np.all(np.abs(np.asarray(g_logits)[:, :, 0]).sum(axis=(-2, -1)) > 0)
    with pytest.raises(ValueError, match=r"output=3 is not one of the M=3 outputs per prompt"):
        SAM_LOSS(logits, iou_pred, gt, valid, output=3)


def test_sam_loss_single_mask_and_weights():
    logits, iou_pred, gt = multimask_case(seed=2, m=1, best=0)
    valid = np.ones(gt.shape[:2], bool)
    weights = dict(focal_weight=3.0, dice_weight=0.5, iou_weight=2.0)
    for multimask in (True, False):
        loss, _ = SAM_LOSS(logits, iou_pred, gt, valid, multimask=multimask, **weights)
        expected = np.mean(
            [
                reference_prompt_loss(logits[i, j, 0], iou_pred[i, j, 0], gt[i, j], **weights)
                for i in range(2)
                for j in range(3)
            ]
        )
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="multimask=False"):
        SAM_LOSS(*multimask_case(m=3), valid, multimask=False)


def test_sam_loss_padding_prompts_change_nothing():
    logits, iou_pred, gt = multimask_case(seed=3, b=2, p=3, m=3)
    valid = np.array([[True, True, False], [True, False, False]])
    loss, metrics = SAM_LOSS(logits, iou_pred, gt, valid)

    # The same valid prompts, packed into one image without padding.
    rows, cols = np.nonzero(valid)
    packed = SAM_LOSS(
        logits[rows, cols][None],
        iou_pred[rows, cols][None],
        gt[rows, cols][None],
        np.ones((1, 3), bool),
    )
    np.testing.assert_allclose(loss, packed[0], rtol=1e-6)
    for key in metrics:
        np.testing.assert_allclose(metrics[key], packed[1][key], rtol=1e-6, atol=1e-7)

    # Garbage (NaN, inf, huge) in padding prompts changes neither loss nor gradient.
    pad = ~valid
    garbage_logits, garbage_iou, garbage_gt = logits.copy(), iou_pred.copy(), gt.copy()
    garbage_logits[pad] = np.nan
    garbage_logits[1, 2] = np.inf
    garbage_iou[pad] = 1e30
    garbage_gt[pad] = np.nan
    (loss_a, _), (gl_a, gi_a) = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid)
    (loss_b, _), (gl_b, gi_b) = SAM_VALUE_AND_GRAD(garbage_logits, garbage_iou, garbage_gt, valid)
    np.testing.assert_array_equal(loss_a, loss_b)
    np.testing.assert_array_equal(gl_a, gl_b)
    np.testing.assert_array_equal(gi_a, gi_b)
    np.testing.assert_array_equal(np.asarray(gl_b)[pad], 0.0)
    np.testing.assert_array_equal(np.asarray(gi_b)[pad], 0.0)


def test_sam_loss_all_invalid_is_zero_with_finite_gradient():
    logits, iou_pred, gt = multimask_case(seed=4)
    valid = np.zeros(gt.shape[:2], bool)
    (loss, metrics), grads = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid)
    assert float(loss) == 0.0
    assert all(float(v) == 0.0 for v in metrics.values())
    for g in grads:
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g, 0.0)


def test_extreme_logits_are_finite():
    _, iou_pred, gt = multimask_case(seed=5)
    signed = 2 * gt - 1
    # Output 0 saturated right, output 1 saturated wrong, output 2 all +1e4.
    logits = np.stack([1e4 * signed, -1e4 * signed, np.full_like(gt, 1e4)], axis=2)
    valid = np.ones(gt.shape[:2], bool)
    (loss, metrics), (g_logits, g_iou) = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid)
    assert np.isfinite(loss) and np.all(np.isfinite(g_logits)) and np.all(np.isfinite(g_iou))
    # The saturated right output wins: no focal or dice cost, IoU 1.
    np.testing.assert_allclose(metrics["focal"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["dice"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["iou"], 1.0)
    np.testing.assert_allclose(loss, np.mean((iou_pred[:, :, 0] - 1.0) ** 2), rtol=1e-5)

    # Saturated wrong logits alone: focal = alpha_t * 1e4 per pixel, finite with finite gradients.
    wrong = -1e4 * signed[:, :, None]
    value, grad = FOCAL_VALUE_AND_GRAD(wrong, gt[:, :, None])
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    alpha_t = np.where(gt, 0.25, 0.75)
    np.testing.assert_allclose(
        FOCAL(wrong, gt[:, :, None])[..., 0],
        1e4 * alpha_t.mean(axis=(-2, -1)),
        rtol=1e-5,
    )
    d_value, d_grad = DICE_VALUE_AND_GRAD(wrong, gt[:, :, None])
    assert np.isfinite(d_value) and np.all(np.isfinite(d_grad))


def test_bfloat16_logits_are_computed_in_float32():
    logits, iou_pred, gt = multimask_case(seed=6)
    valid = np.ones(gt.shape[:2], bool)
    loss, _ = SAM_LOSS(
        jnp.asarray(logits, jnp.bfloat16), jnp.asarray(iou_pred, jnp.bfloat16), gt > 0.5, valid
    )
    assert loss.dtype == jnp.float32
    rounded = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
    rounded_iou = np.asarray(jnp.asarray(iou_pred, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(loss, SAM_LOSS(rounded, rounded_iou, gt, valid)[0], rtol=1e-6)


def test_jit_with_traced_weights():
    # Every sam_loss test above runs under jax.jit (SAM_LOSS / SAM_VALUE_AND_GRAD), which is
    # stricter than eager execution; here the loss weights are traced values too (a schedule).
    logits, iou_pred, gt = multimask_case(seed=7)
    valid = np.array([[True, False, True], [True, True, True]])
    (loss, metrics), grads = SAM_VALUE_AND_GRAD(logits, iou_pred, gt, valid)
    weighted = jax.jit(functools.partial(sam_loss, multimask=True))
    traced_loss, traced_metrics = weighted(
        logits, iou_pred, gt, valid, focal_weight=jnp.float32(20.0), iou_weight=jnp.float32(1.0)
    )
    np.testing.assert_allclose(traced_loss, loss, rtol=1e-6)
    for key in metrics:
        np.testing.assert_allclose(traced_metrics[key], metrics[key], rtol=1e-6, atol=1e-7)
    assert grads[0].shape == logits.shape and np.all(np.isfinite(grads[0]))
