"""Full-size parity: ViT-B at 1024x1024 against the official model (slow: ~1-2 min)."""

import functools

import jax
import numpy as np
import pytest
import torch

from mopeft_jax import Sam, SamConfig
from weights_convert import load_pytorch_checkpoint
from weights_convert.official import build_official_sam, nchw, nhwc, official_decode, relative_error

TOL = 1e-4


@pytest.mark.slow
def test_vit_b_embeddings_masks_and_iou_match():
    reference = build_official_sam(SamConfig.vit_b())
    config, params = load_pytorch_checkpoint(reference.state_dict())
    assert config == SamConfig.vit_b()
    rng = np.random.RandomState(0)
    image = rng.randn(1, 1024, 1024, 3).astype(np.float32)
    with torch.no_grad():
        expected_embedding = nhwc(reference.image_encoder(nchw(image)))
    model = Sam(config)
    embedding = jax.jit(functools.partial(model.apply, method=Sam.encode_image))(
        {"params": params}, image
    )
    assert relative_error(embedding, expected_embedding) <= TOL

    corners = np.sort(rng.rand(4, 2, 2) * 1024, axis=1)
    prompts = dict(
        boxes=corners.reshape(4, 4).astype(np.float32),
        point_coords=(rng.rand(4, 2, 2) * 1024).astype(np.float32),
        point_labels=np.array([[1, 0], [1, 1], [0, 1], [1, -1]], np.int32),
    )
    expected_masks, expected_iou = official_decode(reference, expected_embedding, **prompts)
    masks, iou = model.apply({"params": params}, embedding, method=Sam.decode, **prompts)
    assert masks.shape == (4, 3, 256, 256)
    assert relative_error(masks, expected_masks) <= TOL
    assert relative_error(iou, expected_iou) <= TOL
