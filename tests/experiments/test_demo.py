"""Shortened runs of the offline demo.

- A quick one (30 pretraining steps): every method runs end to end, two at a time as the demo
  runs them, each computing what it computes alone; the tables and plots are written, and the
  frozen weights stay frozen.
- The slow one, that adaptation beats zero-shot SAM, is test_demo_adaptation.py: a file of its
  own, so that a parallel run gives it a worker of its own.
"""

import pathlib

import flax
import numpy as np
import pytest

from experiments.configs.demo import get_config
from mopeft_jax import load_pretrained
from mopeft_jax.experiment.compare import run_comparison
from mopeft_jax.experiment.pretrain import pretrained_sam
from mopeft_jax.experiment.trainer import train

DOMAINS = ["texture_shift", "noise_shift"]


def short_config():
    config = get_config()
    config.pretrain.steps = 30
    config.train.steps = 10
    config.train.checkpoint_every = 10
    config.eval.max_images = 4
    config.compare.datasets = [f"synthetic:{d}" for d in DOMAINS]
    config.compare.methods = ["zero_shot", "mopeft", "full_finetune"]
    return config


def test_short_demo_runs_every_method_and_keeps_frozen_weights_frozen(tmp_path):
    config = short_config()
    config.checkpoint = str(pretrained_sam(config, tmp_path / "cache", progress=False))
    assert any(p.name.startswith("pretrained_sam_") for p in (tmp_path / "cache").iterdir())
    assert pretrained_sam(config, tmp_path / "cache") == pathlib.Path(config.checkpoint)  # cached
    results = run_comparison(config, tmp_path / "compare", progress=False)
    assert [(r.dataset, r.method) for r in results] == [
        (d, m) for d in DOMAINS for m in config.compare.methods
    ]
    for r in results:
        assert 0.0 <= r.miou <= 1.0
        assert (r.trainable == 0) == (r.method == "zero_shot")
        assert bool(r.gates) == (r.method == "mopeft")
    assert (tmp_path / "compare" / "results.md").exists()
    assert (tmp_path / "compare" / "gates.png").exists()
    assert (tmp_path / "compare" / "loss_curves.png").exists()

    # A run beside another worker's is the run alone, bit for bit.
    assert config.compare.workers == 2
    alone = config.copy_and_resolve_references()
    alone.compare.workers = 1
    alone.compare.methods = ["mopeft"]
    alone.compare.datasets = [f"synthetic:{DOMAINS[0]}"]
    (alone_result,) = run_comparison(alone, tmp_path / "alone", progress=False)
    (beside,) = [r for r in results if (r.dataset, r.method) == (DOMAINS[0], "mopeft")]
    assert alone_result.miou == beside.miou
    assert alone_result.history == beside.history
    assert alone_result.gates == beside.gates
    # Step times measured beside another worker say so.
    note = "s / step: the median train step with 2 methods running at once (compare.workers)"
    assert note in (tmp_path / "compare" / "results.md").read_text()
    assert "running at once" not in (tmp_path / "alone" / "results.md").read_text()

    # The MoPEFT run that `run_comparison` resumes from its final checkpoint: its frozen
    # params are the pretrained SAM, bit for bit.
    config.data.name = f"synthetic:{DOMAINS[0]}"
    config.peft = "mopeft"
    run = train(config, tmp_path / "compare" / DOMAINS[0] / "mopeft", progress=False)
    frozen = flax.traverse_util.flatten_dict(run.frozen)
    sam = flax.traverse_util.flatten_dict(load_pretrained(config.checkpoint)[1])
    assert set(frozen) == set(sam)  # MoPEFT trains none of SAM's own weights
    for path, value in frozen.items():
        np.testing.assert_array_equal(value, sam[path])


def test_a_comparison_needs_at_least_one_worker(tmp_path):
    config = short_config()
    config.compare.workers = 0
    with pytest.raises(ValueError, match=r"compare.workers is 0; use 1 \(one method at a time\)"):
        run_comparison(config, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
