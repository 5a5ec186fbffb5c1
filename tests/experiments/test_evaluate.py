"""`python -m experiments.evaluate`: any model folder, any dataset, one-line errors."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from sam_configs import MINIMAL

from experiments import evaluate
from mopeft_jax import Sam, save_pretrained

TINY = MINIMAL


@pytest.fixture(scope="module")
def tiny():
    model = Sam(TINY)
    return model, model.init_params(jax.random.key(0))


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    model, params = tiny
    directory = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(directory, model.config, params)
    return directory


def test_cli_prints_table_and_appends_json(checkpoint, tmp_path, capsys):
    """(e) The command line on a converted tiny checkpoint."""
    output = tmp_path / "results.jsonl"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "synthetic:source,synthetic:noise_shift",
        "--max_images",
        "2",
        "--synthetic_image_size",
        "40",
        "--output",
        str(output),
        "--noprogress",
    ]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out
    assert "| synthetic:source | Synthetic | 2 |" in out
    assert "| synthetic:noise_shift | Synthetic | 2 |" in out
    assert "**Mean** (2 datasets)" in out
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["dataset"] for r in records] == ["synthetic:source", "synthetic:noise_shift"]
    for record in records:
        assert record["split"] == "val" and record["prompt"] == "box"
        assert record["num_images"] == 2
        assert np.asarray(record["confusion"]).shape == (5, 5)
        assert record["miou_percent"] == pytest.approx(100 * record["miou"])
    assert evaluate.main(argv[:-1] + ["--prompt", "point", "--noprogress"]) == 0
    assert len(output.read_text().splitlines()) == 4


def _one_line_error(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_missing_mess_data_dir(checkpoint, tmp_path, capsys):
    missing = tmp_path / "no_such_dir"
    argv = ["--checkpoint", str(checkpoint), "--dataset", "mess:bdd100k"]
    assert evaluate.main(argv + ["--data_dir", str(missing)]) == 1
    assert str(missing) in _one_line_error(capsys)
    assert not missing.exists()
    # An existing folder without the prepared dataset: the MESS builder's own error (the
    # manual directory it would build from is missing), on one line.
    empty = tmp_path / "tfds"
    empty.mkdir()
    assert evaluate.main(argv + ["--data_dir", str(empty)]) == 1
    assert "manual directory" in _one_line_error(capsys)


def test_cli_bad_arguments(checkpoint, tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(checkpoint), "--dataset", "synthetic:nope"]) == 1
    assert "unknown synthetic domain" in _one_line_error(capsys)
    assert evaluate.main(["--checkpoint", str(checkpoint), "--dataset", "mess:nope"]) == 1
    assert "unknown MESS dataset" in _one_line_error(capsys)
    assert evaluate.main(["--checkpoint", str(checkpoint), "--dataset", "bdd100k"]) == 1
    assert "expected kind:name with kind one of synthetic, mess, folder" in _one_line_error(capsys)
    argv = ["--checkpoint", str(tmp_path / "none"), "--dataset", "synthetic:source"]
    assert evaluate.main(argv) == 1
    assert "is not a mopeft-jax checkpoint" in _one_line_error(capsys)


def test_cli_subprocess_exit_status(tmp_path):
    """`python -m experiments.evaluate`: exit status 1 and no traceback on missing data."""
    missing = tmp_path / "no_such_dir"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.evaluate",
            "--checkpoint",
            str(tmp_path),
            "--dataset",
            "mess:paxray_lungs",
            "--data_dir",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the commands run from any directory
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
