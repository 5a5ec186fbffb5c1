"""mopeft_jax.experiment.config: how a config's fields become the run's settings."""

import numpy as np
import pytest

from mopeft_jax.experiment import config as config_lib
from mopeft_jax.train.loss import sam_loss


@pytest.mark.parametrize("requested", [0, 1, 3, 12])
def test_worker_count_keeps_an_explicit_number(requested):
    assert config_lib.worker_count(requested) == requested


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_auto_worker_count_leaves_a_core_to_training(monkeypatch, cores, expected):
    monkeypatch.setattr(
        config_lib.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False
    )
    assert config_lib.worker_count(-1) == expected


def test_base_config_defaults_to_the_automatic_worker_count():
    assert config_lib.base_config().pipeline.worker_count == -1


def test_the_loss_weights_default_to_sams_and_reach_the_loss():
    config = config_lib.base_config()
    default = config_lib.loss_config(config)
    assert (default.focal_weight, default.dice_weight, default.iou_weight) == (20.0, 1.0, 1.0)

    config.loss.focal_weight, config.loss.dice_weight, config.loss.iou_weight = 2.0, 3.0, 0.5
    weights = config_lib.loss_config(config)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 3, 8, 8)).astype(np.float32)
    iou = rng.uniform(size=(2, 3, 3)).astype(np.float32)
    masks = rng.uniform(size=(2, 3, 8, 8)) > 0.5
    valid = np.ones((2, 3), bool)

    def loss(c):
        return float(
            sam_loss(
                logits,
                iou,
                masks,
                valid,
                focal_weight=c.focal_weight,
                dice_weight=c.dice_weight,
                iou_weight=c.iou_weight,
                output=0,
            )[0]
        )

    # The loss is linear in its weights: with output 0 fixed, each term's mean is the same.
    _, terms = sam_loss(logits, iou, masks, valid, output=0)
    expected = 2.0 * terms["focal"] + 3.0 * terms["dice"] + 0.5 * terms["iou_mse"]
    np.testing.assert_allclose(loss(weights), float(expected), rtol=1e-6)
    assert loss(weights) != pytest.approx(loss(default))
