"""Training runs: resume after an interruption, and a clear stop on a NaN loss."""

import json

import jax
import numpy as np
import pytest

from experiments.configs.demo import get_config
from mopeft_jax.experiment import trainer as train_lib


def small_config(steps=6):
    config = get_config()
    config.peft = "mopeft"
    config.data.name = "synthetic:color_shift"
    config.data.num_examples = 16
    config.pipeline.batch_size = 2
    config.pipeline.max_prompts = 4
    config.train.steps = steps
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    return config


def test_interrupted_run_resumes_to_the_same_params(tmp_path, monkeypatch):
    reference = train_lib.train(small_config(), tmp_path / "reference", progress=False)

    real_step = train_lib._jitted_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        step = real_step(*args, **kwargs)

        def wrapped(*a):
            calls["n"] += 1
            if calls["n"] == 4:  # after the checkpoint of step 2, before the one of step 4
                raise KeyboardInterrupt
            return step(*a)

        return wrapped

    monkeypatch.setattr(train_lib, "_jitted_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(small_config(), tmp_path / "run", progress=False)
    monkeypatch.setattr(train_lib, "_jitted_step", real_step)
    # The run resumes with pipeline workers it did not have: the data position is a count of
    # batches, which any worker count continues exactly.
    config = small_config()
    config.pipeline.worker_count = 1
    resumed = train_lib.train(config, tmp_path / "run", progress=False)

    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.trainable, reference.trainable)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    real_dataset = train_lib.make_dataset

    class Poisoned:
        """The real iterator (state included), with NaN pixels in its fourth batch."""

        def __init__(self, dataset):
            self.iterator, self.count = iter(dataset), 0

        def __iter__(self):
            return self

        def __next__(self):
            batch, self.count = next(self.iterator), self.count + 1
            return (
                dict(batch, image=np.full_like(batch["image"], np.nan))
                if self.count == 4
                else batch
            )

        def get_state(self):
            return self.iterator.get_state()

        def set_state(self, state):
            self.iterator.set_state(state)

    def poisoned(*args, **kwargs):
        return Poisoned(real_dataset(*args, **kwargs))

    monkeypatch.setattr(train_lib, "make_dataset", poisoned)
    # The state that step 4 starts from (step 3's output) gave the NaN, so the newest state
    # known good is the last checkpoint before it: step 2's (checkpoint_every=2).
    with pytest.raises(
        train_lib.TrainingDiverged,
        match=r"The loss became nan at step 4; training stopped\. The last good "
        r"checkpoint \(step 2\) is kept",
    ):
        train_lib.train(small_config(), tmp_path, progress=False)
    from mopeft_jax.train.checkpoint import TrainCheckpointer

    with TrainCheckpointer(tmp_path / "checkpoints") as checkpointer:
        assert checkpointer.latest_step() == 2
