"""A shortened run of the offline demo: adapting beats zero-shot SAM on shifted domains,
and the frozen weights stay frozen."""

import flax
import numpy as np

from experiments import demo
from experiments.compare import run_comparison
from experiments.configs.demo import get_config
from experiments.train import train

DOMAINS = ["color_shift", "shape_shift"]


def short_config():
    config = get_config()
    config.pretrain.steps = 150
    config.train.steps = 40
    config.train.checkpoint_every = 40
    config.eval.max_images = 12
    config.compare.datasets = DOMAINS
    config.compare.methods = ["zero_shot", "mopeft", "full_finetune"]
    return config


def test_adaptation_beats_zero_shot_and_frozen_weights_stay_frozen(tmp_path):
    config = short_config()
    pretrained = demo.pretrained_sam(config, tmp_path / "cache", progress=False)
    results = run_comparison(config, tmp_path / "compare", params=pretrained, progress=False)
    miou = {(r.dataset, r.method): r.miou for r in results}
    for domain in DOMAINS:
        zero_shot = miou[(domain, "zero_shot")]
        assert miou[(domain, "mopeft")] > zero_shot, miou
        assert miou[(domain, "full_finetune")] > zero_shot, miou
    assert (tmp_path / "compare" / "results.md").exists()
    assert (tmp_path / "compare" / "gates.png").exists()
    assert (tmp_path / "compare" / "loss_curves.png").exists()

    # The MoPEFT run that `run_comparison` resumes from its final checkpoint: its frozen
    # params are the pretrained SAM, bit for bit.
    config.data.name = DOMAINS[0]
    run = train(config, tmp_path / "compare" / DOMAINS[0] / "mopeft", progress=False,
                params=pretrained)
    frozen = flax.traverse_util.flatten_dict(run.frozen)
    sam = flax.traverse_util.flatten_dict(pretrained)
    assert set(frozen) == set(sam)  # MoPEFT trains none of SAM's own weights
    for path, value in frozen.items():
        np.testing.assert_array_equal(value, sam[path])
