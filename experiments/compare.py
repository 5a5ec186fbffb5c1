"""The paper's comparison: zero-shot SAM, each single PEFT, full fine-tuning and MoPEFT.

    python -m experiments.compare --config demo --workdir runs/compare \\
        --config.checkpoint=checkpoints/sam_tiny

Trains every method of `config.compare.methods` on every dataset of `config.compare.datasets`
(resuming finished or interrupted runs in WORKDIR/<dataset>/<method>), evaluates each MESS-style,
and writes WORKDIR/results.md, results.csv, results.jsonl and the plots (gates.png,
loss_curves.png, <dataset>/masks_<method>.png).
"""

import pathlib
import sys

from mopeft_jax.experiment import cli
from mopeft_jax.experiment.compare import run_comparison


def run() -> int:
    cli.require(cli.CONFIG, cli.WORKDIR)
    results = run_comparison(cli.CONFIG.value, cli.WORKDIR.value, progress=cli.PROGRESS.value)
    print((pathlib.Path(cli.WORKDIR.value) / "results.md").read_text())
    return 0 if results else 1


def main(argv=None) -> int:
    """The command with `argv` (default sys.argv[1:]); returns the exit status."""
    return cli.main(run, argv, configs_dir=pathlib.Path(__file__).parent / "configs")


if __name__ == "__main__":
    sys.exit(main())
