"""The demo's claim: adapting beats zero-shot SAM on the shifted domains (slow).

It needs the demo's own pretraining (300 steps, about 2 minutes on a 2-core CPU): a SAM
pretrained for tens of steps segments nothing (mIoU < 10%). Four domains, three methods.
"""

import numpy as np
import pytest

from experiments.configs.demo import get_config
from mopeft_jax.experiment.compare import run_comparison
from mopeft_jax.experiment.pretrain import pretrained_sam


@pytest.mark.slow
def test_adaptation_beats_zero_shot_on_the_shifted_domains(tmp_path):
    """MoPEFT and full fine-tuning beat zero-shot SAM by at least a point of mIoU averaged
    over the four target domains.

    The demo's pretraining lands on another SAM wherever the float summation order differs
    (another host, another XLA kernel), so the claim must hold for any pretrained SAM, not
    for one. Mean mIoU over the domains, 300 pretraining and 40 adaptation steps:

    ===========================================  =========  ==============  ======
    loss (focal : dice), pretrained SAM           zero-shot  full fine-tune  MoPEFT
    ===========================================  =========  ==============  ======
    20 : 1, 2026-12-01, three float orders        30.8-35.0  +2.5 to +7.4    +2.1 to +6.3
    20 : 1, 2026-12-01, another 2-core host       33.3       +0.9            -2.5
    20 : 1, 2026-12-02, this project's host       32.6       +3.9            +0.5
    2 : 1, 2026-12-02, this project's host        34.3       +9.0            +6.5
    2 : 1, the same with train.seed = 1           40.8       +8.6            +6.5
    ===========================================  =========  ==============  ======

    With SAM's 20 : 1 the adapted models often predicted empty masks where the pretrained
    SAM was unsure (texture_shift at 16% for every PEFT, all background), and whether
    adapting helped on the mean was the pretrained SAM's chance: the claim failed on two of
    five. With the demo's 2 : 1 both methods gained 6.5 points or more on both SAMs, MoPEFT
    on every domain but shape_shift (within 1.1 points there). The claim keeps its 1-point
    margin; it is on the mean, not per domain.
    """
    config = get_config()  # the demo's pretraining, loss, adaptation steps, eval images
    config.compare.methods = ["zero_shot", "mopeft", "full_finetune"]
    config.checkpoint = str(pretrained_sam(config, tmp_path / "cache", progress=False))
    results = run_comparison(config, tmp_path / "compare", progress=False)
    miou = {(r.dataset, r.method): r.miou for r in results}
    domains = [name.partition(":")[2] for name in config.compare.datasets]
    assert len(domains) == 4, domains

    def mean(method):
        return np.mean([miou[(domain, method)] for domain in domains])

    # The comparison means something only if the pretraining worked: on the mean over the
    # domains, not per domain (texture_shift, the hardest, is 16-23% zero-shot).
    assert mean("zero_shot") > 0.2, ("the pretrained SAM segments little", miou)
    for method in ("mopeft", "full_finetune"):
        assert mean(method) > mean("zero_shot") + 0.01, (method, miou)
