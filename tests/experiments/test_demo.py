"""A shortened run of the offline demo: every method runs end to end, the tables and plots
are written, and the frozen weights stay frozen.

Whether adaptation beats zero-shot needs a competent pretrained SAM: the demo's own
pretraining (600+ steps) gets there, a test-sized one (tens of steps) does not, so the
comparison of numbers is left to the demo itself."""

import flax
import numpy as np

from experiments import demo
from experiments.compare import run_comparison
from experiments.configs.demo import get_config
from experiments.train import train

DOMAINS = ["texture_shift", "noise_shift"]


def short_config():
    config = get_config()
    config.pretrain.steps = 30
    config.train.steps = 10
    config.train.checkpoint_every = 10
    config.eval.max_images = 4
    config.compare.datasets = DOMAINS
    config.compare.methods = ["zero_shot", "mopeft", "full_finetune"]
    return config


def test_short_demo_runs_every_method_and_keeps_frozen_weights_frozen(tmp_path):
    config = short_config()
    pretrained = demo.pretrained_sam(config, tmp_path / "cache", progress=False)
    assert any(p.name.startswith("pretrained_sam_") for p in (tmp_path / "cache").iterdir())
    results = run_comparison(config, tmp_path / "compare", params=pretrained, progress=False)
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

    # The MoPEFT run that `run_comparison` resumes from its final checkpoint: its frozen
    # params are the pretrained SAM, bit for bit.
    config.data.name = DOMAINS[0]
    run = train(
        config, tmp_path / "compare" / DOMAINS[0] / "mopeft", progress=False, params=pretrained
    )
    frozen = flax.traverse_util.flatten_dict(run.frozen)
    sam = flax.traverse_util.flatten_dict(pretrained)
    assert set(frozen) == set(sam)  # MoPEFT trains none of SAM's own weights
    for path, value in frozen.items():
        np.testing.assert_array_equal(value, sam[path])
