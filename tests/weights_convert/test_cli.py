"""`python -m weights_convert` writes a folder that `load_pretrained` reads back."""

import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from sam_configs import SMALL_CONFIGS

from mopeft_jax import load_pretrained, save_pretrained
from weights_convert import load_pytorch_checkpoint
from weights_convert.official import build_official_sam


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "weights_convert", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sam_small.pth"
    torch.save(build_official_sam(SMALL_CONFIGS["windowed_padded"]).state_dict(), path)
    return path


def test_convert_then_load(checkpoint, tmp_path):
    out = tmp_path / "converted"
    result = run_cli(checkpoint, out, "--decoder-num-heads", "4")
    assert result.returncode == 0, result.stderr
    assert "Converted" in result.stdout
    config, params = load_pretrained(out)
    expected_config, expected_params = load_pytorch_checkpoint(checkpoint, decoder_num_heads=4)
    assert config == expected_config == SMALL_CONFIGS["windowed_padded"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected_params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]  # no temporary left


def test_existing_output_needs_overwrite(checkpoint, tmp_path):
    out = tmp_path / "converted"
    out.mkdir()
    result = run_cli(checkpoint, out)
    assert result.returncode == 1
    assert "already exists; pass overwrite=True" in result.stderr
    assert run_cli(checkpoint, out, "--overwrite", "--decoder-num-heads", "4").returncode == 0


def test_bad_source_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    result = run_cli(bad, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_load_pretrained_names_what_is_missing(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="is not a mopeft-jax checkpoint: expected config.json"
    ):
        load_pretrained(tmp_path)


def test_save_pretrained_round_trip_keeps_overrides(tmp_path):
    config = SMALL_CONFIGS["global_only"].replace(dtype="bfloat16", attention="chunked")
    params = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    save_pretrained(tmp_path / "x", config, params)
    loaded_config, loaded = load_pretrained(tmp_path / "x")
    assert loaded_config == config
    np.testing.assert_array_equal(loaded["a"]["b"], params["a"]["b"])
