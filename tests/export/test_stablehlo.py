"""The StableHLO export runs without mopeft_jax and computes what the PEFT model computes."""

import json
import pathlib
import subprocess
import sys

import flax
import numpy as np
import pytest
from export_setup import CONFIG, decode, encode, images, sam_params

from mopeft_jax import SamConfig
from mopeft_jax.export import load_stablehlo, point_prompts, save_stablehlo
from mopeft_jax.peft import preset

RUNNER = pathlib.Path(__file__).with_name("_run_exported.py")
LOW_RES = CONFIG.low_res_mask_size
# Merging LoRA reorders float32 sums: measured |diff| 2e-6 on embeddings of scale 4, which LoRA
# itself moves by 0.5. The gated export (prefix folded) came out bit-identical on XLA CPU.
ATOL = 2e-5


def prompt_sets():
    """1 prompt set of two points, and 5 of a box and a mask input: `Sam.decode`'s keyword
    arguments and the exported decoder's inputs for each."""
    rng = np.random.RandomState(0)
    points = np.array([[[20.0, 30.0], [90.0, 100.0]]], np.float32)
    labels = np.array([[1, 0]], np.int32)
    boxes = np.array(
        [[10, 12, 70, 90], [30, 5, 120, 60], [0, 0, 127, 127], [64, 64, 65, 65], [5, 90, 50, 127]],
        np.float32,
    )
    masks = rng.randn(5, LOW_RES, LOW_RES, 1).astype(np.float32)
    return [
        (
            dict(point_coords=points, point_labels=labels),
            (
                *point_prompts(points, labels),
                np.zeros((1, LOW_RES, LOW_RES, 1), np.float32),
                np.zeros(1, np.float32),
            ),
        ),
        (
            dict(boxes=boxes, mask_inputs=masks),
            (*point_prompts(boxes=boxes), masks, np.ones(5, np.float32)),
        ),
    ]


def decoded(config, params):
    """The model's (masks, iou) for each prompt set, on the embedding of `images()`."""
    embeddings = encode(config)(params, images())
    outputs = []
    for kwargs, _ in prompt_sets():
        args = [kwargs.get(k) for k in ("point_coords", "point_labels", "boxes", "mask_inputs")]
        outputs.append(decode(config)(params, embeddings, *args))
    return outputs


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A gated MoPEFT SAM, every leaf moved, and its export."""
    config = CONFIG.replace(peft=preset("mopeft"))
    params = sam_params(config)
    directory = save_stablehlo(tmp_path_factory.mktemp("gated"), config, params)
    return config, params, directory


@pytest.fixture(scope="module")
def deployed(gated, tmp_path_factory):
    """The outputs of the gated export, run by `_run_exported.py` in a fresh process."""
    _, _, directory = gated
    work = tmp_path_factory.mktemp("deployed")
    inputs = {"images": images()}
    for k, (_, prompts) in enumerate(prompt_sets()):
        names = ("point_coords", "point_labels", "mask_input", "has_mask_input")
        inputs.update({f"{name}_{k}": value for name, value in zip(names, prompts)})
    np.savez(work / "inputs.npz", **inputs)
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(directory), "inputs.npz", "outputs.npz"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with np.load(work / "outputs.npz") as outputs:
        return dict(outputs)


def test_the_gated_mixture_exports_with_its_peft_params(gated):
    config, params, directory = gated
    metadata = json.loads((directory / "export.json").read_text())
    assert metadata["config"]["peft"] == dict(
        config.to_dict()["peft"], prefix_reparam=False
    )  # gates and LoRA stay; the prefix MLP is folded into flat prefixes
    with np.load(directory / "image_encoder.npz") as weights:
        exported = set(weights)
        assert weights["image_encoder/prefix/prefix"].shape == (3, 2, 10, 64)
    expected = {
        "/".join(p)
        for p in flax.traverse_util.flatten_dict(params)
        if p[0] == "image_encoder" and p[1] != "prefix"
    } | {"image_encoder/prefix/prefix"}
    assert exported == expected
    assert {
        "image_encoder/blocks_0/gate_lora_q/dense/kernel",
        "image_encoder/blocks_2/adapter/up/kernel",
    } < exported


def test_a_process_without_mopeft_jax_encodes_as_the_model(gated, deployed):
    config, params, _ = gated
    embeddings = encode(config)(params, images())
    np.testing.assert_allclose(deployed["embeddings"], embeddings, rtol=0, atol=ATOL)


def test_the_exported_decoder_takes_1_and_5_prompts(gated, deployed):
    config, params, _ = gated
    expected = decoded(config, params)
    assert [len(iou) for _, iou in expected] == [1, 5]
    for k, (masks, iou) in enumerate(expected):
        assert deployed[f"masks_{k}"].shape == (len(iou), 3, LOW_RES, LOW_RES)
        np.testing.assert_allclose(deployed[f"masks_{k}"], masks, rtol=0, atol=ATOL)
        np.testing.assert_allclose(deployed[f"iou_predictions_{k}"], iou, rtol=0, atol=ATOL)


def test_a_merged_lora_export_is_plain_sam_with_the_lora_outputs(tmp_path):
    config = CONFIG.replace(peft=preset("lora"))
    params = sam_params(config)
    encode_exported, _, metadata = load_stablehlo(save_stablehlo(tmp_path, config, params))
    assert SamConfig.from_dict(metadata["config"]) == CONFIG  # plain SAM
    plain = flax.traverse_util.flatten_dict(sam_params())
    with np.load(tmp_path / "image_encoder.npz") as weights:
        assert set(weights) == {"/".join(p) for p in plain if p[0] == "image_encoder"}
    np.testing.assert_allclose(
        encode_exported(images()), encode(config)(params, images()), rtol=0, atol=ATOL
    )


def test_save_does_not_overwrite(tmp_path):
    (tmp_path / "export.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"already holds export\.json; pass overwrite=True"):
        save_stablehlo(tmp_path, CONFIG, {})


def test_load_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a StableHLO export: no export.json"):
        load_stablehlo(tmp_path)
