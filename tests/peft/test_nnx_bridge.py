"""Flax NNX users can use the Linen modules through `flax.nnx.bridge`."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import preset
from mopeft_jax.sam.image_encoder import ImageEncoderViT

CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=64,
    window_size=2,
    peft=preset("mopeft"),
)


def test_image_encoder_with_peft_as_an_nnx_module_matches_linen():
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    encoder = nnx.bridge.ToNNX(ImageEncoderViT(CONFIG), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(encoder, x)
    out = encoder(x)
    assert out.shape == (2, 4, 4, CONFIG.prompt_embed_dim)
    # The NNX module holds the same parameter tree that Linen's apply takes.
    params = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
    expected = ImageEncoderViT(CONFIG).apply({"params": params}, x)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_nnx_module_trains_with_nnx_grad():
    """Gradients flow through the bridged module into the PEFT parameters."""
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
    encoder = nnx.bridge.ToNNX(ImageEncoderViT(CONFIG), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(encoder, x)

    def loss(module):
        return jnp.mean(module(x) ** 2)

    grads = nnx.grad(loss)(encoder)
    flat = nnx.to_pure_dict(grads)
    lora_b = flat["blocks_0"]["lora_q"]["lora_b"]["kernel"]
    assert float(jnp.abs(lora_b).max()) > 0


def test_full_sam_through_the_bridge():
    images = jax.random.normal(jax.random.key(2), (1, 64, 64, 3))
    boxes = jnp.asarray([[4.0, 8.0, 40.0, 50.0]])
    model = nnx.bridge.ToNNX(Sam(CONFIG), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(model, images, boxes=boxes)
    masks, iou = model(images, boxes=boxes)
    assert masks.shape == (1, 3, 16, 16) and iou.shape == (1, 3)
