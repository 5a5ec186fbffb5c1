"""The converter: architecture inference, the layout rules, and strictness."""

import numpy as np
import pytest
import torch
from sam_configs import SMALL_CONFIGS
from segment_anything import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l

from mopeft_jax import SamConfig
from weights_convert import CheckpointError, load_pytorch_checkpoint
from weights_convert.convert import convert_state_dict, param_shapes, to_flax_layout, torch_name
from weights_convert.infer import infer_config
from weights_convert.official import build_official_sam

OFFICIAL = [
    (build_sam_vit_b, SamConfig.vit_b()),
    (build_sam_vit_l, SamConfig.vit_l()),
    (build_sam_vit_h, SamConfig.vit_h()),
]


def shapes_only(builder):
    """The official model's state dict as zero-cost arrays of the right shapes."""
    with torch.device("meta"):
        model = builder()
    return {k: np.broadcast_to(np.float32(0), v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("builder, expected", OFFICIAL)
def test_official_sizes_are_inferred_from_shapes(builder, expected):
    assert infer_config(shapes_only(builder)) == expected


@pytest.mark.parametrize("builder, config", OFFICIAL)
def test_every_official_tensor_maps_to_exactly_one_flax_param(builder, config):
    state = shapes_only(builder)
    shapes = param_shapes(config)
    names = {torch_name(path): path for path in shapes}
    assert len(names) == len(shapes) == len(state)
    assert set(names) == set(state)
    for name, path in names.items():
        assert to_flax_layout(path, state[name]).shape == shapes[path], name


def small_state(name="windowed_padded"):
    model = build_official_sam(SMALL_CONFIGS[name])
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_layout_rules():
    state = small_state()
    _, params = load_pytorch_checkpoint(state, decoder_num_heads=4)
    qkv = state["image_encoder.blocks.0.attn.qkv.weight"]
    np.testing.assert_array_equal(
        params["image_encoder"]["blocks_0"]["attn"]["qkv"]["kernel"], qkv.T
    )
    conv = state["image_encoder.patch_embed.proj.weight"]  # (O, I, kH, kW)
    np.testing.assert_array_equal(
        params["image_encoder"]["patch_embed"]["proj"]["kernel"], conv.transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        params["image_encoder"]["neck_1"]["scale"], state["image_encoder.neck.1.weight"]
    )
    np.testing.assert_array_equal(
        params["mask_decoder"]["mask_tokens"]["embedding"], state["mask_decoder.mask_tokens.weight"]
    )
    np.testing.assert_array_equal(
        params["prompt_encoder"]["pe_layer"]["positional_encoding_gaussian_matrix"],
        state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )


def test_wrapped_state_dict_and_pixel_buffers_are_accepted():
    state = small_state()
    state["pixel_mean"] = np.zeros(3, np.float32)
    config, _ = load_pytorch_checkpoint({"model": state}, decoder_num_heads=4)
    assert config == SMALL_CONFIGS["windowed_padded"]


def test_missing_tensor_is_named():
    state = small_state()
    del state["image_encoder.blocks.1.mlp.lin2.bias"]
    with pytest.raises(
        CheckpointError, match=r"missing tensors: image_encoder\.blocks\.1\.mlp\.lin2\.bias"
    ):
        load_pytorch_checkpoint(state, decoder_num_heads=4)


def test_unexpected_tensor_is_named():
    state = small_state()
    state["mask_decoder.extra_head.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(
        CheckpointError, match=r"unexpected tensors: mask_decoder\.extra_head\.weight"
    ):
        load_pytorch_checkpoint(state, decoder_num_heads=4)


def test_mis_shaped_tensor_is_named_with_both_shapes():
    state = small_state()
    state["mask_decoder.iou_token.weight"] = np.zeros((1, 31), np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"mis-shaped tensors: mask_decoder\.iou_token\.weight "
        r"\(1, 31\), expected \(1, 32\)",
    ):
        load_pytorch_checkpoint(state, decoder_num_heads=4)


def test_all_problems_are_reported_at_once():
    state = small_state()
    del state["image_encoder.neck.3.bias"]
    state["image_encoder.neck.9.weight"] = np.zeros(3, np.float32)
    state["image_encoder.blocks.0.attn.proj.bias"] = np.zeros(5, np.float32)
    with pytest.raises(CheckpointError) as error:
        convert_state_dict(state, SMALL_CONFIGS["windowed_padded"])
    message = str(error.value)
    assert "\n" not in message
    for name in [
        "image_encoder.neck.3.bias",
        "image_encoder.neck.9.weight",
        "image_encoder.blocks.0.attn.proj.bias (5,), expected (64,)",
    ]:
        assert name in message


def test_rel_pos_that_fits_no_sam_is_named():
    state = small_state()
    state["image_encoder.blocks.0.attn.rel_pos_h"] = np.zeros((6, 16), np.float32)
    with pytest.raises(
        CheckpointError, match=r"image_encoder\.blocks\.0\.attn\.rel_pos_h has 6 rows"
    ):
        load_pytorch_checkpoint(state)


def test_non_sam_state_dict():
    state = torch.nn.Linear(3, 4).state_dict()
    with pytest.raises(CheckpointError, match=r"Not a SAM checkpoint: .*\['bias', 'weight'\]"):
        load_pytorch_checkpoint(state)


def test_non_sam_file(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(CheckpointError, match="Not a SAM checkpoint"):
        load_pytorch_checkpoint(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "sam.pth"
    torch.save(build_official_sam(SMALL_CONFIGS["windowed_padded"]).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"sam\.pth could not be read as a PyTorch checkpoint; "
        r"it may be truncated",
    ):
        load_pytorch_checkpoint(path)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "notes.pth"
    garbage.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch checkpoint"):
        load_pytorch_checkpoint(garbage)
    with pytest.raises(CheckpointError, match=r"nothing\.pth does not exist"):
        load_pytorch_checkpoint(tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError, match="is a folder without model.safetensors"):
        load_pytorch_checkpoint(tmp_path)
