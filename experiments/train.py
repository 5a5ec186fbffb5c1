"""Train any method on any dataset from a config file; the run folder becomes a model.

    python -m experiments.train --config synthetic_mopeft --workdir runs/x \\
        --config.peft=lora --config.train.steps=300

`--config` is a file, or the name of one in experiments/configs/; `--config.FIELD=VALUE`
overrides any field (mopeft_jax/experiment/config.py lists them). WORKDIR gets run.json, metrics.jsonl,
checkpoints/ and, at the end, model/: `mopeft_jax.load_pretrained("runs/x")`,
`python -m experiments.evaluate --checkpoint runs/x` and `SamPredictor.from_pretrained("runs/x")`
read it. Rerunning the same command resumes: after a kill, a NaN stop (its advice can be
followed in place) or a damaged checkpoint (the previous one is used).
"""

import pathlib
import sys

from mopeft_jax.experiment import cli, train
from mopeft_jax.train import sharding


def run() -> int:
    cli.require(cli.CONFIG, cli.WORKDIR)
    sharding.initialize_distributed()
    result = train(cli.CONFIG.value, cli.WORKDIR.value, progress=cli.PROGRESS.value)
    last = result.history[-1] if result.history else {}
    print(
        f"Done: {len(result.history)} logged steps, last loss {last.get('loss', float('nan')):.4f}, "
        f"{result.step_seconds:.3f} s/step. The model: {result.workdir} "
        f"(metrics in {result.workdir / 'metrics.jsonl'})."
    )
    return 0


def main(argv=None) -> int:
    """The command with `argv` (default sys.argv[1:]); returns the exit status."""
    return cli.main(run, argv, configs_dir=pathlib.Path(__file__).parent / "configs")


if __name__ == "__main__":
    sys.exit(main())
