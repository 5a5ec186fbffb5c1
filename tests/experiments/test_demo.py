"""Shortened runs of the offline demo.

- A quick one (30 pretraining steps): every method runs end to end, two at a time as the demo
  runs them, each computing what it computes alone; the tables and plots are written, and the
  frozen weights stay frozen.
- A slow one (the demo's own pretraining, four domains, three methods): adaptation beats
  zero-shot SAM on average. A SAM pretrained for tens of steps segments nothing (mIoU < 10%),
  so this needs the real pretraining (300 steps, about 5 minutes on a 2-core CPU).
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


@pytest.mark.slow
def test_adaptation_beats_zero_shot_on_the_shifted_domains(tmp_path):
    """MoPEFT and full fine-tuning beat zero-shot SAM by at least a point of mIoU averaged
    over the four target domains.

    Training and evaluation use the same output (the first multimask one, config.loss.output).
    While training took SAM's best of three outputs instead, the claim held or failed with the
    float summation order of the pretraining: which output learned the boxes was chance.
    With the demo's 600 pretraining and 80 adaptation steps, three runs (two float orders,
    two seeds) gave MoPEFT +6.8 to +8.2 points and full fine-tuning +10.7 to +12.0. With the
    shorter 300 and 40 steps (2026-12-01): zero-shot 35.8 / 17.0 / 37.2 / 33.3 (mean 30.8),
    MoPEFT mean +6.3 (texture and shape 0.9 and 0.4 down, color and noise 13 up), full
    fine-tuning +7.4 (every domain up). With the mask decoder's upscaling as a matmul (another
    float order, so another pretrained SAM): zero-shot mean 35.0, MoPEFT +3.5, full fine-tuning
    +3.1, texture_shift within a point of zero-shot for every method. With the random init
    compiled at XLA's optimization level 0 (ulp-different initial weights, another pretrained
    SAM again): zero-shot 43.1 / 16.1 / 40.7 / 35.4 (mean 33.8), MoPEFT +2.1, full
    fine-tuning +2.5. So the claim is on the mean, with a 1-point margin, not per domain.
    """
    config = get_config()  # the demo's pretraining, adaptation steps, eval images, domains
    config.compare.methods = ["zero_shot", "mopeft", "full_finetune"]
    config.checkpoint = str(pretrained_sam(config, tmp_path / "cache", progress=False))
    results = run_comparison(config, tmp_path / "compare", progress=False)
    miou = {(r.dataset, r.method): r.miou for r in results}
    domains = [name.partition(":")[2] for name in config.compare.datasets]
    assert len(domains) == 4, domains

    def mean(method):
        return np.mean([miou[(domain, method)] for domain in domains])

    # The comparison means something only if the pretraining worked: on the mean over the
    # domains, not per domain (texture_shift, the hardest, was 17.6 on one host and above 20
    # on another, while the mean was 50.6 and above).
    assert mean("zero_shot") > 0.2, ("the pretrained SAM segments little", miou)
    for method in ("mopeft", "full_finetune"):
        assert mean(method) > mean("zero_shot") + 0.01, (method, miou)
