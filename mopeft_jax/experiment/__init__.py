"""Config-driven experiments: the config schema, training runs, comparisons and their plots.

The `experiments/` scripts are thin command-line recipes over this package:

    from mopeft_jax.experiment import base_config, train, run_comparison
"""

from mopeft_jax.experiment.config import base_config
from mopeft_jax.experiment.trainer import (
    ConfigMismatch,
    TrainingDiverged,
    TrainResult,
    setup,
    train,
)

__all__ = [
    "ConfigMismatch",
    "TrainResult",
    "TrainingDiverged",
    "base_config",
    "setup",
    "train",
]
