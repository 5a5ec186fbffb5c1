"""The FLOP counts from shapes equal the matmul and convolution FLOPs of the traced model."""

import functools
import math

import jax
import numpy as np
import pytest

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.flops import decoder_flops, encoder_flops, train_step_flops
from mopeft_jax.sam.model import Sam

CONFIGS = {
    "tiny": SamConfig.tiny(attention="xla"),
    "padded_windows": SamConfig.tiny(image_size=112, attention="xla"),  # 14x14 grid, windows of 4
    "vit_b": SamConfig.vit_b(attention="xla"),  # 64x64 grid, windows of 14 padded to 70
}


def traced_matmul_flops(jaxpr) -> float:
    """2 x the multiply-adds of every dot_general and convolution in a jaxpr, nested ones too."""
    total = 0.0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval.shape
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in contracting)
        elif eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
            per_output = kernel[spec[1]] * math.prod(kernel[d] for d in spec[2:])
            total += 2.0 * math.prod(out) * per_output
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += traced_matmul_flops(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += traced_matmul_flops(sub)
    return total


def _variables(model):
    return {"params": jax.eval_shape(model.init_params, jax.random.key(0))}


@pytest.mark.parametrize("name", CONFIGS)
def test_encoder_flops_count_every_matmul_of_the_encoder(name):
    config = CONFIGS[name]
    model = Sam(config)
    image = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), np.float32)
    encode = functools.partial(model.apply, method=Sam.encode_image)
    traced = traced_matmul_flops(jax.make_jaxpr(encode)(_variables(model), image).jaxpr)
    assert encoder_flops(config) == traced


@pytest.mark.parametrize("num_prompts", [1, 5])
@pytest.mark.parametrize("name", CONFIGS)
def test_decoder_flops_count_every_matmul_of_box_prompts(name, num_prompts):
    config = CONFIGS[name]
    model = Sam(config)
    grid = config.embedding_size
    embedding = jax.ShapeDtypeStruct((1, grid, grid, config.prompt_embed_dim), np.float32)
    boxes = jax.ShapeDtypeStruct((num_prompts, 4), np.float32)
    decode = functools.partial(model.apply, method=Sam.decode)
    jaxpr = jax.make_jaxpr(lambda v, e, b: decode(v, e, boxes=b))(
        _variables(model), embedding, boxes
    )
    assert decoder_flops(config, num_prompts) == traced_matmul_flops(jaxpr.jaxpr)


def test_a_train_step_is_forward_input_gradients_and_trained_weight_gradients():
    config = SamConfig.vit_b()
    forward = encoder_flops(config) + decoder_flops(config, 16)
    both = train_step_flops(config, 16, encoder_weights=True, decoder_weights=True)
    assert both == 3 * forward
    peft = train_step_flops(config, 16, encoder_weights=False, decoder_weights=True)
    assert peft == 2 * encoder_flops(config) + 3 * decoder_flops(config, 16)
    # ViT-B: about a TFLOP per image forward (the figure issue 13 measured: 988 GFLOP/img).
    assert 0.95e12 < encoder_flops(config) < 1.0e12
