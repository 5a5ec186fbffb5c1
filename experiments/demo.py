"""The offline default: MoPEFT against every baseline, on a CPU, in minutes.

    python -m experiments.demo [--workdir outputs/demo] [--config.train.steps=40 ...]

1. Pretrains a small SAM on the synthetic source domain (every weight, from scratch), or takes
   it from the cache (`--cache_dir`) if this pretraining ran before.
2. Adapts it to the four shifted synthetic domains with every method: zero-shot, LoRA, prefix
   tuning, adapters, full fine-tuning, MoPEFT and MoPEFT with the input expert.
3. Evaluates each MESS-style (oracle box prompts, dataset-level mIoU), prints the table and
   writes results.md/.csv and PNG plots (gates, loss curves, masks) to WORKDIR.

The config is experiments/configs/demo.py; `--config.FIELD=VALUE` overrides any field
(`--config.pretrain.steps`, `--config.compare.methods`, ...).
"""

import os
import pathlib
import sys
import time

import jax
from absl import flags

from mopeft_jax.experiment import cli
from mopeft_jax.experiment.compare import RESULT_FILES, run_comparison
from mopeft_jax.experiment.pretrain import pretrained_sam

CONFIGS = pathlib.Path(__file__).parent / "configs"
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir",
    str(pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "mopeft_jax"),
    "where the pretrained SAM is cached",
)


def run() -> int:
    config = cli.CONFIG.value
    workdir = pathlib.Path(cli.WORKDIR.value or "outputs/demo").expanduser()
    # The comparison's runs resume from their checkpoints; its results start afresh.
    for name in RESULT_FILES:
        (workdir / name).unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    print(f"mopeft-jax demo on {jax.devices()[0].platform}; outputs in {workdir}")
    config.checkpoint = str(pretrained_sam(config, _CACHE_DIR.value, progress=cli.PROGRESS.value))
    run_comparison(config, workdir, progress=cli.PROGRESS.value)
    print()
    print((workdir / "results.md").read_text())
    print(f"Plots: {workdir}/gates.png, {workdir}/loss_curves.png, {workdir}/*/masks_*.png")
    print(f"Total time {time.perf_counter() - began:.0f} s")
    return 0


def main(argv=None) -> int:
    """The demo with `argv` (default sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv.insert(0, f"--config={CONFIGS / 'demo.py'}")
    # The tiny SAM's thousands of small kernels a step, in two threads, contend for a single
    # malloc arena: the comparison took 73-74 s with one and 61-66 s without (2026-12-02).
    return cli.main(run, argv, configs_dir=CONFIGS, single_malloc_arena=False)


if __name__ == "__main__":
    sys.exit(main())
