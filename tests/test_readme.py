"""The README runs as written: its researcher loop (convert, prepare a folder, train, evaluate)
and every Python block, on a tiny converted SAM, from a fresh directory.

The shell commands of the loop run as the README gives them, with only the number of training
steps cut down; the Python blocks then run, in order, in one process.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sam_configs import MINIMAL

from weights_convert.official import build_official_sam

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TINY = MINIMAL
# The README trains for 1000 steps; the test for two.
SHORT_TRAINING = ["--config.train.steps=2", "--config.train.checkpoint_every=1"]


def blocks(language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def commands(block: str) -> list:
    """The shell commands of a block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def loop_commands() -> list:
    """The commands of the researcher loop: conversion, data preparation, training, evaluation."""
    wanted = (
        "python -m weights_convert",
        "python -c",
        "python -m experiments.train",
        "python -m experiments.evaluate",
        "python -m experiments.segment",
    )
    return [c for b in blocks("bash") for c in commands(b) if c.startswith(wanted)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fresh directory and home with what the README's user has: a checkpoint, data, a photo."""
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    rng = np.random.default_rng(0)
    torch.save(build_official_sam(TINY).state_dict(), root / "sam_vit_b_01ec64.pth")
    data = home / "my_data"
    (data).mkdir(parents=True)
    (data / "classes.txt").write_text("background\ncat\n")
    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            (data / split / "images").mkdir(parents=True, exist_ok=True)
            (data / split / "labels").mkdir(parents=True, exist_ok=True)
            label = np.zeros((40, 50), np.uint8)
            label[8 : 20 + 3 * k, 10:30] = 1
            label[-2:] = 255
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                data / split / "images" / f"{k}.jpg"
            )
            Image.fromarray(label).save(data / split / "labels" / f"{k}.png")
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(root / "photo.jpg")
    env = dict(os.environ, HOME=str(home), JAX_PLATFORMS="cpu")
    env["MOPEFT_JAX_CACHE_DIR"] = str(root / "jax_cache")
    return root, env


def run(command, cwd, env):
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_researcher_loop_runs_as_written(workspace):
    root, env = workspace
    found = loop_commands()
    assert [c.split()[:3] for c in found] == [
        ["python", "-m", "weights_convert"],
        ["python", "-c", '"from'],
        ["python", "-m", "experiments.train"],
        ["python", "-m", "experiments.evaluate"],
        ["python", "-m", "experiments.segment"],
    ]
    for command in found:
        argv = shlex.split(command)
        argv[0] = sys.executable
        if "experiments.train" in argv:
            argv += SHORT_TRAINING
        out = run(argv, root, env)
        if "experiments.evaluate" in argv:
            assert "| folder:my_data | Folder | 2 |" in out
    assert (root / "checkpoints" / "sam_vit_b" / "config.json").is_file()
    assert (root / "runs" / "my_data" / "model" / "metadata.json").is_file()
    assert (root / "outputs" / "segment" / "overlay.png").is_file()


def test_every_python_block_runs(workspace):
    root, env = workspace
    if not (root / "runs" / "my_data").is_dir():
        pytest.skip("needs the run folder of test_the_researcher_loop_runs_as_written")
    program = "\n\n".join(blocks("python"))
    out = run([sys.executable, "-c", program], root, env)
    losses = [float(v) for v in out.split() if re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", v)]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert "automatic masks" in out
    assert (root / "sam_export" / "export.json").is_file() and (root / "sam_decoder.onnx").is_file()
