"""`python -m experiments.train` as a researcher meets it: each recovery path in a subprocess.

A run folder becomes a model; a NaN stop, a damaged or partial checkpoint, a truncated metrics
line and a config of another experiment are each met by rerunning the command, which resumes
(or says in one line what is wrong) instead of failing with a traceback.

Every subprocess shares one persistent compilation cache, so only the first one compiles.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from mopeft_jax import Sam, SamConfig, load_pretrained, save_pretrained

BASE = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=64,
    window_size=3,
    prompt_embed_dim=32,
    decoder_depth=1,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)
STEPS = 4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    directory = tmp_path_factory.mktemp("base") / "sam"
    save_pretrained(directory, BASE, Sam(BASE).init_params(jax.random.key(0)))
    return directory


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def train(workdir, base, cache, *overrides, cwd, env=None):
    """Runs the command from `cwd` (with `env` added to the environment); returns
    (exit status, stdout, stderr)."""
    args = [
        "--config=synthetic_mopeft",
        f"--workdir={workdir}",
        f"--config.checkpoint={base}",
        "--config.data.image_size=64",
        "--config.data.num_examples=8",
        "--config.pipeline.batch_size=2",
        "--config.pipeline.max_prompts=2",
        f"--config.train.steps={STEPS}",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=1",
        "--config.optimizer.warmup_steps=1",
        f"--jax_cache_dir={cache}",
        "--noprogress",
        *overrides,
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})),
    )
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(stderr):
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def trained_params(workdir, step=None):
    return jax.tree_util.tree_leaves(load_pretrained(workdir, step=step)[1])


def assert_same_params(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(base, cache, tmp_path_factory):
    """An uninterrupted run, from another directory: the folder is a model."""
    workdir = tmp_path_factory.mktemp("runs") / "reference"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    status, out, err = train(workdir, base, cache, "--config.train.tensorboard=True", cwd=elsewhere)
    assert status == 0, err
    assert f"The model: {workdir}" in out
    assert sorted(p.name for p in workdir.iterdir()) == [
        "checkpoints",
        "metrics.jsonl",
        "model",
        "run.json",
        "tensorboard",
    ]
    (events,) = (workdir / "tensorboard").glob("events.out.tfevents.*")
    assert b"loss" in events.read_bytes() and b"gate/" in events.read_bytes()
    config, _ = load_pretrained(workdir)
    assert config.peft is not None and config.peft.gated  # MoPEFT's layers and gates
    assert json.loads((workdir / "model" / "metadata.json").read_text())["step"] == STEPS
    return workdir


def test_a_run_folder_is_a_model_at_its_end_and_at_each_step(reference):
    final = trained_params(reference)
    # The export and the last step rebuilt from the base SAM are the same model.
    assert_same_params(trained_params(reference / "checkpoints" / str(STEPS)), final)
    assert_same_params(trained_params(reference, step=STEPS), final)
    earlier = trained_params(reference, step=STEPS - 1)
    assert any(not np.array_equal(x, y) for x, y in zip(earlier, final))


def test_nan_stop_resumes_with_its_data_position_and_the_advice_works(
    base, cache, reference, tmp_path
):
    workdir = tmp_path / "run"
    # Rates this large blow the weights up: the loss is NaN or inf by the second step.
    huge = ["--config.optimizer.learning_rates.peft=1e30", "--config.optimizer.grad_clip_norm=0"]
    status, _, err = train(workdir, base, cache, *huge, cwd=tmp_path)
    assert status == 1
    line = one_error_line(err)
    assert "training stopped. The last good checkpoint (step 1)" in line
    assert "rerun in the same workdir" in line
    # The same command resumes from the kept state (data position included) and stops again
    # at the same step, with the same message, instead of crashing.
    status, _, err2 = train(workdir, base, cache, *huge, cwd=tmp_path)
    assert status == 1 and one_error_line(err2) == line
    # Following the advice in place: the optimizer may change; the run resumes and finishes.
    status, _, err3 = train(workdir, base, cache, cwd=tmp_path)
    assert status == 0, err3
    assert "a fresh optimizer state" in err3
    assert (workdir / "model" / "metadata.json").is_file()


@pytest.mark.parametrize("damage", ["truncated arrays", "missing state", "missing data"])
def test_damaged_latest_step_is_named_and_the_previous_one_used(
    base, cache, reference, tmp_path, damage
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "model")
    # Keep the checkpoints of steps 2 and 3 (as an interrupted run would have), damage step 3.
    last = workdir / "checkpoints" / str(STEPS)
    shutil.rmtree(last)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    (workdir / "metrics.jsonl").write_text("\n".join(lines[: STEPS - 1]) + "\n")
    damaged = workdir / "checkpoints" / str(STEPS - 1)
    if damage == "truncated arrays":
        for array in (damaged / "state").rglob("*"):
            if array.is_file() and array.parent.name == "d":
                array.write_bytes(array.read_bytes()[:8])
    else:
        shutil.rmtree(damaged / ("state" if damage == "missing state" else "data"))
    status, _, err = train(workdir, base, cache, cwd=tmp_path)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1 and f"step {STEPS - 1}" in warnings[0], err
    assert len(err.splitlines()) < 20, err  # no wall of orbax errors
    # From step 2, the rerun reaches the reference's model exactly.
    assert_same_params(trained_params(workdir), trained_params(reference))


def test_truncated_last_metrics_line_is_dropped(base, cache, reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))
    shutil.rmtree(workdir / "model")
    metrics = workdir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[: STEPS - 1]) + "\n" + lines[STEPS - 1][:15])
    status, _, err = train(workdir, base, cache, cwd=tmp_path)
    assert status == 0, err
    assert "Dropping the unfinished last line" in err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


def test_another_experiments_config_gets_one_line_naming_the_fields(
    base, cache, reference, tmp_path
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    status, _, err = train(
        workdir,
        base,
        cache,
        "--config.peft=lora",
        "--config.data.name=synthetic:noise_shift",
        cwd=tmp_path,
    )
    assert status == 1
    line = one_error_line(err)
    assert f"{workdir} holds a run trained with peft='mopeft' (this config: 'lora')" in line
    assert "data.name='synthetic:color_shift' (this config: 'synthetic:noise_shift')" in line
    assert "checkpoint=" not in line  # only the fields that differ


def test_bad_config_fields_are_one_line(base, cache, tmp_path):
    status, _, err = train(tmp_path / "run", base, cache, "--config.peft=unipelt", cwd=tmp_path)
    assert status == 1
    assert "Unknown PEFT preset 'unipelt'" in one_error_line(err)
    status, _, err = train(
        tmp_path / "run", base, cache, "--config.data.name=color_shift", cwd=tmp_path
    )
    assert status == 1
    assert "expected kind:name" in one_error_line(err)


def test_paths_expand_user_and_environment_variables(base, cache, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(base, home / "sam")
    env = {"HOME": str(home), "RUNS": str(tmp_path / "runs")}
    status, _, err = train(
        "$RUNS/run", "~/sam", cache, "--config.train.steps=1", cwd=tmp_path, env=env
    )
    assert status == 0, err
    assert (tmp_path / "runs" / "run" / "model").is_dir()
    assert not (tmp_path / "$RUNS").exists() and not (tmp_path / "~").exists()
