"""mopeft_jax.experiment.config: how a config's fields become the run's settings."""

import pytest

from mopeft_jax.experiment import config as config_lib


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
