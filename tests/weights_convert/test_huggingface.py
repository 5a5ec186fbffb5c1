"""Hugging Face (transformers `SamModel`) checkpoints convert like the official ones.

The reference for the Hugging Face layout is transformers itself, not our own
renaming:

* Official -> HF names come from transformers' conversion script
  `transformers/models/sam/convert_sam_to_hf.py` (`KEYS_TO_MODIFY_MAPPING` and
  `replace_keys`). Its wheels (5.x) no longer ship that script, and it imports
  network and image packages at module level, so `_script_layout` below restates
  its key mapping as data, with the script's semantics (ordered plain-substring
  replacements, the hypernetwork-MLP renumbering, pixel_mean/std dropped, the
  positional embedding copied to `shared_image_embedding`). Source:
  huggingface/transformers, src/transformers/models/sam/convert_sam_to_hf.py at
  commit 09cb93d8890401636f6abd80b763671e755aa025. Where the script is importable,
  `test_restated_mapping_equals_the_transformers_script` checks the two agree.
* The result must load strictly into a transformers `SamModel` built from a
  matching transformers `SamConfig`, so the names and shapes are the model's.
* A `SamModel` with its own random weights, saved with `save_pretrained`, converts
  and runs through our JAX model to the masks and IoU transformers computes.
"""

import functools
import re
import sys

import jax
import numpy as np
import pytest
import torch

from mopeft_jax import Sam, SamConfig
from weights_convert import CheckpointError, load_pytorch_checkpoint
from weights_convert.convert import to_flax_layout, torch_name
from weights_convert.official import build_official_sam, nchw, randomize_, relative_error


def _import_transformers():
    """transformers, imported while conftest's torchvision stand-ins are out of the way.

    transformers probes for torchvision with `importlib.util.find_spec`, which fails
    on a module without a spec, as the stand-ins are. They are hidden during the
    import (and the probe, which is cached), then put back for segment_anything.
    """
    stubs = {
        name: module
        for name, module in sys.modules.items()
        if name.split(".")[0] == "torchvision" and getattr(module, "__spec__", 0) is None
    }
    for name in stubs:
        del sys.modules[name]
    try:
        module = pytest.importorskip("transformers")
        module.utils.import_utils.is_torchvision_available()
        for name in (
            "SamModel",
            "SamConfig",
            "SamVisionConfig",
            "SamPromptEncoderConfig",
            "SamMaskDecoderConfig",
        ):
            getattr(module, name)  # resolves transformers' lazy imports now
    finally:
        sys.modules.update(stubs)
    return module


transformers = _import_transformers()

MASK_TOL = 1e-4

CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=64,
    patch_size=8,
    window_size=3,  # 8x8 grid: windows are padded to 9x9
    prompt_embed_dim=32,
    mask_in_chans=8,
    decoder_depth=2,
    decoder_mlp_dim=64,
    decoder_num_heads=4,
    iou_head_hidden_dim=24,
)
# Also all-global attention and a 4-layer IoU head (transformers' proj_in,
# layers.0-1, proj_out), which the conversion script's fixed table cannot express.
DEEP_HEAD_CONFIG = CONFIG.replace(
    encoder_depth=1,
    encoder_global_attn_indexes=(0,),
    window_size=0,
    iou_head_depth=4,
    mask_in_chans=4,
)

POSITIONAL = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)


# --- The official -> HF key mapping of convert_sam_to_hf.py, restated as data. ---

_SCRIPT_SUBSTRING_RENAMES = (
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
)
# Hypernetwork MLPs: `layers.{n}` -> this, for the n in `output_hypernetworks_mlps.j.layers.n`.
_HYPERNETWORK_LINEAR = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}
_HYPERNETWORK = re.compile(r"output_hypernetworks_mlps\.\d+\.layers\.(\d+)")


def _script_name(key: str) -> str:
    for old, new in _SCRIPT_SUBSTRING_RENAMES:
        key = key.replace(old, new)
    m = _HYPERNETWORK.search(key)
    if m:
        key = key.replace(f"layers.{m.group(1)}", _HYPERNETWORK_LINEAR[m.group(1)])
    return key


def _script_layout(official_state):
    """The state dict convert_sam_to_hf.py makes of an official one (both copies of the PE)."""
    hf = {
        _script_name(k): v
        for k, v in official_state.items()
        if k not in ("pixel_mean", "pixel_std")
    }
    hf[POSITIONAL[0]] = hf[POSITIONAL[1]]
    return hf


# --- Fixtures. ---


def hf_config(config: SamConfig):
    """The transformers SamConfig of the same architecture.

    The decoder's LayerNorm eps is set to the official 1e-5 (transformers defaults
    to 1e-6 there) so that the forward comparison measures only the conversion.
    """
    return transformers.SamConfig(
        vision_config=transformers.SamVisionConfig(
            hidden_size=config.encoder_embed_dim,
            output_channels=config.prompt_embed_dim,
            num_hidden_layers=config.encoder_depth,
            num_attention_heads=config.encoder_num_heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
            window_size=config.window_size,
            global_attn_indexes=list(config.encoder_global_attn_indexes),
            mlp_ratio=config.mlp_ratio,
            num_pos_feats=config.prompt_embed_dim // 2,
        ),
        prompt_encoder_config=transformers.SamPromptEncoderConfig(
            hidden_size=config.prompt_embed_dim,
            image_size=config.image_size,
            patch_size=config.patch_size,
            mask_input_channels=config.mask_in_chans,
        ),
        mask_decoder_config=transformers.SamMaskDecoderConfig(
            hidden_size=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_hidden_layers=config.decoder_depth,
            num_attention_heads=config.decoder_num_heads,
            attention_downsample_rate=config.attention_downsample_rate,
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            layer_norm_eps=1e-5,
        ),
    )


def random_sammodel(config: SamConfig, seed: int):
    """A transformers SamModel of `config` with random weights of its own.

    transformers' initialisation (Linear weights N(0, 0.02), 1e-10 in the vision
    tower, the Fourier matrix N(0, hidden/2)) gives a random model whose masks hardly
    depend on the prompt, so the weights are first reset to PyTorch's defaults (the
    Fourier matrix to N(0, 1), as in segment_anything), then perturbed like the
    official reference (`randomize_`: rel-pos, pos_embed and LayerNorms too).
    """
    model = transformers.SamModel(hf_config(config)).eval()
    torch.manual_seed(seed)
    resettable = (
        torch.nn.Linear,
        torch.nn.modules.conv._ConvNd,
        torch.nn.Embedding,
        torch.nn.LayerNorm,
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, resettable):
                module.reset_parameters()
        model.shared_image_embedding.positional_embedding.normal_()  # tied: both copies
    randomize_(model, seed)
    return model


def load(source, config=CONFIG):
    # decoder_num_heads leaves no trace in tensor shapes.
    return load_pytorch_checkpoint(source, decoder_num_heads=config.decoder_num_heads)


@functools.lru_cache(maxsize=None)
def official():
    """(official state dict, its conversion)."""
    state = {k: v.clone() for k, v in build_official_sam(CONFIG, seed=0).state_dict().items()}
    return state, load(state)


@functools.lru_cache(maxsize=None)
def hf_model_with_official_weights():
    """A transformers SamModel holding the official model's weights, loaded strictly."""
    model = transformers.SamModel(hf_config(CONFIG)).eval()
    result = model.load_state_dict(_script_layout(official()[0]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model


def assert_same_conversion(actual, expected):
    (config, params), (expected_config, expected_params) = actual, expected
    assert config == expected_config
    flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    expected_flat = dict(jax.tree_util.tree_flatten_with_path(expected_params)[0])
    assert flat.keys() == expected_flat.keys()
    for path, value in expected_flat.items():
        assert np.array_equal(flat[path], value), jax.tree_util.keystr(path)


# --- The reference mapping itself. ---


def test_restated_mapping_equals_the_transformers_script():
    try:
        from transformers.models.sam.convert_sam_to_hf import replace_keys  # pylint: disable=g-import-not-at-top
    except Exception as e:  # not shipped in transformers 5 wheels; needs httpx, PIL, hub
        pytest.skip(f"transformers' convert_sam_to_hf is not importable ({type(e).__name__})")
    state = official()[0]
    assert replace_keys(dict(state)).keys() == _script_layout(state).keys()


def test_restated_mapping_gives_the_sammodel_names_and_shapes():
    state = _script_layout(official()[0])
    reference = transformers.SamModel(hf_config(CONFIG)).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in reference.items()
    }
    hf_model_with_official_weights()  # and loads strictly


# --- (a), (b): in-memory state dicts. ---


@pytest.mark.parametrize("prefix", ["", "sam."])
def test_state_dict_with_both_positional_copies(prefix):
    state, expected = official()
    hf = {prefix + k: v for k, v in _script_layout(state).items()}
    assert all(prefix + k in hf for k in POSITIONAL)
    assert_same_conversion(load(hf), expected)


def test_sammodel_state_dict():
    """`SamModel.state_dict()` (torch tensors, the tied embedding listed twice)."""
    assert_same_conversion(load(hf_model_with_official_weights().state_dict()), official()[1])


@pytest.mark.parametrize("kept", POSITIONAL)
def test_state_dict_with_one_positional_copy(kept):
    state, expected = official()
    hf = _script_layout(state)
    del hf[next(k for k in POSITIONAL if k != kept)]
    assert_same_conversion(load(hf), expected)


# --- (c): model.safetensors. ---


def test_model_safetensors_of_save_pretrained(tmp_path):
    hf_model_with_official_weights().save_pretrained(tmp_path)
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert 1 <= sum(k in saved for k in POSITIONAL) <= 2
    assert_same_conversion(load(tmp_path / "model.safetensors"), official()[1])


def test_safetensors_file_with_both_positional_copies(tmp_path):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

    state, expected = official()
    save_file(
        {k: v.numpy() for k, v in _script_layout(state).items()}, str(tmp_path / "x.safetensors")
    )
    assert_same_conversion(load(tmp_path / "x.safetensors"), expected)


# --- (d): a save_pretrained folder of a SamModel with its own random weights. ---


@pytest.mark.parametrize("config", [CONFIG, DEEP_HEAD_CONFIG], ids=["windowed", "deep_iou_head"])
def test_save_pretrained_folder_matches_transformers_forward(config, tmp_path):
    model = random_sammodel(config, seed=1)
    model.save_pretrained(tmp_path)
    converted_config, params = load(tmp_path, config)
    assert converted_config == config

    hf_state = {k: v.numpy() for k, v in model.state_dict().items()}
    if config.iou_head_depth == 3:  # the script's table covers this head only
        for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
            flax_path = tuple(p.key for p in path)
            source = hf_state[_script_name(torch_name(flax_path))]
            assert np.array_equal(value, to_flax_layout(flax_path, source)), flax_path

    rng = np.random.RandomState(2)
    images = rng.randn(1, config.image_size, config.image_size, 3).astype(np.float32)
    corners = np.sort(rng.rand(2, 2) * config.image_size, axis=0)
    boxes = corners.reshape(1, 4).astype(np.float32)
    with torch.no_grad():
        out = model(
            pixel_values=nchw(images),
            input_boxes=torch.from_numpy(boxes[:, None]),
            multimask_output=True,
        )
        other = model(pixel_values=nchw(images), input_boxes=torch.from_numpy(boxes[:, None] / 2))
    expected_masks, expected_iou = out.pred_masks[:, 0].numpy(), out.iou_scores[:, 0].numpy()
    # The comparison sees mistakes on the prompt side only if the prompt matters.
    assert relative_error(other.pred_masks[:, 0], expected_masks) > 100 * MASK_TOL
    masks, iou = jax.jit(Sam(config).apply)({"params": params}, images, boxes=boxes)
    low = config.low_res_mask_size
    assert masks.shape == expected_masks.shape == (1, 3, low, low)
    assert iou.shape == expected_iou.shape == (1, 3)
    assert relative_error(masks, expected_masks) <= MASK_TOL
    assert relative_error(iou, expected_iou) <= MASK_TOL


# --- Errors. ---


@pytest.mark.parametrize("prefix", ["", "sam."])
def test_differing_positional_copies_are_rejected(prefix):
    hf = {prefix + k: v.clone() for k, v in _script_layout(official()[0]).items()}
    hf[prefix + POSITIONAL[0]] += 1e-3
    with pytest.raises(CheckpointError) as error:
        load(hf)
    message = str(error.value)
    assert prefix + POSITIONAL[0] in message and prefix + POSITIONAL[1] in message
    assert "\n" not in message


def test_prefixed_and_plain_copies_of_one_tensor_are_rejected():
    hf = dict(_script_layout(official()[0]))
    hf["sam.vision_encoder.pos_embed"] = hf["vision_encoder.pos_embed"]
    with pytest.raises(CheckpointError, match="sam.vision_encoder.pos_embed"):
        load(hf)


def test_unknown_hf_tensor_is_reported_by_the_strict_check():
    hf = dict(_script_layout(official()[0]))
    hf["mask_decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected tensors: mask_decoder\.extra_head"):
        load(hf)
