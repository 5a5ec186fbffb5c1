"""The way back to PyTorch: a merged-LoRA SAM as an official checkpoint, same outputs."""

import subprocess
import sys

import jax
import numpy as np
import torch
from export_setup import CONFIG, images, official_sam, sam_params

from mopeft_jax import Sam, save_pretrained
from mopeft_jax.export import merge_lora
from mopeft_jax.peft import preset
from weights_convert import to_official_state_dict
from weights_convert.official import build_official_sam, nchw, nhwc, official_decode

LORA = CONFIG.replace(peft=preset("lora"))
BOXES = np.array([[10, 12, 70, 90]], np.float32)


@jax.jit
def lora_sam(params, image):
    return Sam(LORA).apply({"params": params}, image, boxes=BOXES)


def official_outputs(state):
    model = build_official_sam(CONFIG, seed=1)  # other weights, all replaced
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        embedding = nhwc(model.image_encoder(nchw(images())))
    return official_decode(model, embedding, boxes=BOXES)


def test_merged_lora_in_the_official_model_gives_the_lora_model_outputs():
    params = sam_params(LORA)
    merged_config, merged = merge_lora(LORA, params)
    masks, iou = official_outputs(to_official_state_dict(merged, merged_config))
    expected_masks, expected_iou = lora_sam(params, images())
    plain_masks, _ = official_outputs(official_sam()[0].state_dict())  # the SAM under the LoRA
    assert np.abs(plain_masks - expected_masks).max() > 1e-2  # LoRA moves the masks
    # PyTorch and XLA sum float32 in different orders, and the merged kernel rounds
    # W + s A B once: measured |diff| <= 7e-7 on mask logits and IoU of scale 1.
    np.testing.assert_allclose(masks, expected_masks, rtol=0, atol=1e-5)
    np.testing.assert_allclose(iou, expected_iou, rtol=0, atol=1e-5)


def test_cli_merges_lora_and_writes_an_official_checkpoint(tmp_path):
    params = sam_params(LORA)
    save_pretrained(tmp_path / "lora", LORA, params)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "weights_convert",
            "--to-pytorch",
            tmp_path / "lora",
            tmp_path / "sam.pth",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "(LoRA merged)" in result.stdout
    written = torch.load(tmp_path / "sam.pth", weights_only=True)
    merged_config, merged = merge_lora(LORA, params)
    expected = to_official_state_dict(merged, merged_config)
    assert set(written) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(written[name], tensor, rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora", "sam.pth"]  # no temporary
