"""Flax params -> the official state dict: the inverse rules, the exact round trip, refusals.

The round trip with merged LoRA is tests/export/test_to_pytorch.py.
"""

import flax
import jax
import numpy as np
import pytest
import torch
from sam_configs import SMALL_CONFIGS
from segment_anything import build_sam_vit_b

from mopeft_jax import Sam, SamConfig, save_pretrained
from mopeft_jax.peft import preset
from weights_convert import CheckpointError, load_pytorch_checkpoint, to_official_state_dict
from weights_convert.__main__ import main
from weights_convert.convert import param_shapes, to_torch_layout, torch_name
from weights_convert.official import build_official_sam

CONFIG = SMALL_CONFIGS["windowed_padded"]


def official_state(seed=0):
    return {k: v.numpy() for k, v in build_official_sam(CONFIG, seed).state_dict().items()}


def zero_params(config):
    """Params of `Sam(config)` as zeros, without compiling its initialisers."""
    shapes = jax.eval_shape(Sam(config).init_params, jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_the_official_builder_gets_every_tensor_in_its_shape():
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_sam_vit_b().state_dict().items()}
    # Zero-cost stand-ins in the Flax layout, transposed by the inverse rules.
    got = {
        torch_name(path): to_torch_layout(path, np.broadcast_to(np.float32(0), shape)).shape
        for path, shape in param_shapes(SamConfig.vit_b()).items()
    }
    assert got == expected


def test_plain_round_trip_gives_the_same_tensors():
    state = official_state()
    config, params = load_pytorch_checkpoint(state, decoder_num_heads=CONFIG.decoder_num_heads)
    back = to_official_state_dict(params, config)
    assert set(back) == set(state)
    for name, tensor in back.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(), name
        np.testing.assert_array_equal(tensor.numpy(), state[name], err_msg=name)
    model = build_official_sam(CONFIG, seed=1)  # other weights, all replaced
    model.load_state_dict(back, strict=True)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), state[name], err_msg=name)


def test_peft_layers_are_refused_by_name():
    config = CONFIG.replace(peft=preset("mopeft"))
    with pytest.raises(CheckpointError) as error:
        to_official_state_dict(zero_params(config), config)
    layers = ["adapter", "gate_adapter", "gate_lora_q", "gate_lora_v", "gate_prefix"]
    named = [
        f"image_encoder/blocks_{i}/{m}" for i in range(3) for m in layers + ["lora_q", "lora_v"]
    ]
    assert str(error.value) == (
        "The params have PEFT layers, which the official SAM has no place for: "
        + ", ".join(named + ["image_encoder/prefix"])
        + ". Merge LoRA first with mopeft_jax.export.merge_lora (ungated LoRA only); gates, "
        "prefixes, adapters and the input expert cannot be merged."
    )


def test_params_that_do_not_fit_are_named():
    flat = flax.traverse_util.flatten_dict(zero_params(CONFIG))
    del flat[("image_encoder", "neck_1", "bias")]
    flat[("mask_decoder", "iou_token", "embedding")] = np.zeros((1, 31), np.float32)
    flat[("mask_decoder", "extra", "kernel")] = np.zeros((2, 2), np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"missing params: image_encoder/neck_1/bias; unexpected params: "
        r"mask_decoder/extra/kernel; mis-shaped params: mask_decoder/iou_token/embedding "
        r"\(1, 31\), expected \(1, 32\)\.$",
    ):
        to_official_state_dict(flax.traverse_util.unflatten_dict(flat), CONFIG)


def test_cli_refuses_a_gated_mixture_and_an_existing_output_in_one_line(tmp_path, capsys):
    config = CONFIG.replace(peft=preset("mopeft"))
    save_pretrained(tmp_path / "mopeft", config, zero_params(config))
    out = tmp_path / "sam.pth"
    assert main(["--to-pytorch", str(tmp_path / "mopeft"), str(out)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: The params have PEFT layers") and stderr.count("\n") == 1
    assert not out.exists()
    out.write_bytes(b"")
    assert main(["--to-pytorch", str(tmp_path / "mopeft"), str(out)]) == 1
    assert (
        capsys.readouterr().err == f"error: {out} already exists; pass --overwrite to replace it.\n"
    )
