"""The Flax SAM reproduces the official PyTorch SAM (random weights, converted)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sam_configs import SMALL_CONFIGS

from mopeft_jax import Sam
from weights_convert import load_pytorch_checkpoint
from weights_convert.official import build_official_sam, nchw, nhwc, official_decode, relative_error

EMBEDDING_TOL = 1e-5
MASK_TOL = 1e-4


@functools.lru_cache(maxsize=None)
def converted(name, attention="auto"):
    """(official model, jax config, jax params) for SMALL_CONFIGS[name]."""
    reference = build_official_sam(SMALL_CONFIGS[name])
    config, params = load_pytorch_checkpoint(
        reference.state_dict(),
        decoder_num_heads=SMALL_CONFIGS[name].decoder_num_heads,
        attention=attention,
    )
    return reference, config, params


def random_images(config, batch, seed=0):
    return (
        np.random.RandomState(seed)
        .randn(batch, config.image_size, config.image_size, 3)
        .astype(np.float32)
    )


def random_prompts(config, kind, num, seed=0):
    """`num` prompt sets of one kind for one image."""
    rng = np.random.RandomState(seed)
    size = config.image_size
    prompts = {}
    if "points" in kind:
        prompts["point_coords"] = (rng.rand(num, 3, 2) * size).astype(np.float32)
        prompts["point_labels"] = rng.randint(-1, 2, size=(num, 3)).astype(np.int32)
    if "box" in kind:
        corners = np.sort(rng.rand(num, 2, 2) * size, axis=1)
        prompts["boxes"] = corners.reshape(num, 4).astype(np.float32)
    if "mask" in kind:
        low = config.low_res_mask_size
        prompts["mask_inputs"] = rng.randn(num, low, low, 1).astype(np.float32) * 4
    return prompts


@functools.lru_cache(maxsize=None)
def embeddings(name, attention="auto"):
    """(official, jax) image embeddings (2, h, w, D) of two random images."""
    reference, config, params = converted(name, attention)
    images = random_images(config, 2)
    with torch.no_grad():
        expected = nhwc(reference.image_encoder(nchw(images)))
    actual = jax.jit(functools.partial(Sam(config).apply, method=Sam.encode_image))(
        {"params": params}, images
    )
    return expected, np.asarray(actual)


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_converted_config_equals_the_reference_config(name):
    assert converted(name)[1] == SMALL_CONFIGS[name]


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_image_embeddings_match(name):
    expected, actual = embeddings(name)
    assert relative_error(actual, expected) <= EMBEDDING_TOL


@pytest.mark.parametrize("name", ["windowed_padded", "global_only"])
def test_chunked_attention_kernel_matches(name):
    expected, actual = embeddings(name, attention="chunked")
    assert relative_error(actual, expected) <= EMBEDDING_TOL


PROMPT_KINDS = ["points", "box", "points+box", "points+mask", "box+mask"]


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", PROMPT_KINDS)
@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_masks_and_iou_match_for_several_prompts_per_image(name, kind, multimask):
    """Three prompt sets against one image embedding, end to end from the image."""
    reference, config, params = converted(name)
    expected_embeddings, actual_embeddings = embeddings(name)
    prompts = random_prompts(config, kind, num=3)
    expected_masks, expected_iou = official_decode(
        reference, expected_embeddings[:1], multimask_output=multimask, **prompts
    )
    masks, iou = Sam(config).apply(
        {"params": params},
        actual_embeddings[:1],
        multimask_output=multimask,
        method=Sam.decode,
        **prompts,
    )
    m = config.num_multimask_outputs if multimask else 1
    low = config.low_res_mask_size
    assert masks.shape == (3, m, low, low) and iou.shape == (3, m)
    assert relative_error(masks, expected_masks) <= MASK_TOL
    assert relative_error(iou, expected_iou) <= MASK_TOL


def test_batch_of_images_with_one_prompt_set_each():
    """Sam.__call__ on B=2 images equals the official per-image loop."""
    reference, config, params = converted("windowed_padded")
    images = random_images(config, 2, seed=3)
    prompts = random_prompts(config, "points+box", num=2, seed=4)
    masks, iou = jax.jit(Sam(config).apply)({"params": params}, images, **prompts)
    with torch.no_grad():
        reference_embeddings = nhwc(reference.image_encoder(nchw(images)))
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in prompts.items()}
        expected_masks, expected_iou = official_decode(
            reference, reference_embeddings[i : i + 1], **one
        )
        assert relative_error(masks[i : i + 1], expected_masks) <= MASK_TOL
        assert relative_error(iou[i : i + 1], expected_iou) <= MASK_TOL


def test_shared_embedding_equals_one_embedding_per_prompt():
    _, config, params = converted("windowed_padded")
    _, emb = embeddings("windowed_padded")
    prompts = random_prompts(config, "box", num=5)
    decode = jax.jit(functools.partial(Sam(config).apply, method=Sam.decode))
    shared = decode({"params": params}, emb[:1], **prompts)
    repeated = decode({"params": params}, np.repeat(emb[:1], 5, axis=0), **prompts)
    np.testing.assert_allclose(shared[0], repeated[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(shared[1], repeated[1], rtol=0, atol=1e-6)


def test_decode_without_prompts_uses_the_embedding_batch():
    reference, config, params = converted("windowed_padded")
    expected_embeddings, actual_embeddings = embeddings("windowed_padded")
    masks, _ = Sam(config).apply({"params": params}, actual_embeddings, method=Sam.decode)
    expected, _ = official_decode(reference, expected_embeddings[:1])
    assert masks.shape[0] == 2
    assert relative_error(masks[:1], expected) <= MASK_TOL


@pytest.mark.parametrize("multimask", [True, False])
def test_zero_prompt_sets_give_empty_outputs_of_the_usual_shapes(multimask):
    _, config, params = converted("windowed_padded")
    _, emb = embeddings("windowed_padded")
    decode = functools.partial(
        Sam(config).apply,
        {"params": params},
        emb[:1],
        method=Sam.decode,
        multimask_output=multimask,
    )
    one_masks, one_iou = decode(**random_prompts(config, "points+box", num=1))
    masks, iou = decode(**random_prompts(config, "points+box", num=0))
    assert masks.shape == (0, *one_masks.shape[1:]) and masks.dtype == one_masks.dtype
    assert iou.shape == (0, *one_iou.shape[1:]) and iou.dtype == one_iou.dtype


@pytest.mark.parametrize(
    "prompts, message",
    [
        (dict(point_coords=np.zeros((2, 1, 2))), "point_coords and point_labels must be given"),
        (dict(boxes=np.zeros((2, 3))), "boxes has shape"),
        (
            dict(
                boxes=np.zeros((2, 4)),
                point_coords=np.zeros((3, 1, 2)),
                point_labels=np.zeros((3, 1)),
            ),
            "disagree on the batch size",
        ),
    ],
)
def test_malformed_prompts_are_rejected(prompts, message):
    _, config, params = converted("windowed_padded")
    _, emb = embeddings("windowed_padded")
    with pytest.raises(ValueError, match=message):
        Sam(config).apply({"params": params}, emb[:1], method=Sam.decode, **prompts)


def test_wrongly_sized_image_is_rejected():
    _, config, params = converted("windowed_padded")
    with pytest.raises(
        ValueError, match=r"encode_image expects images of shape \(B, 128, 128, 3\)"
    ):
        Sam(config).apply({"params": params}, jnp.zeros((1, 100, 128, 3)), method=Sam.encode_image)
