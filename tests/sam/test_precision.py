"""`SamConfig.matmul_precision` reaches every matmul and convolution XLA is given.

JAX's default on GPUs is TF32 for float32 matmuls; a float32 SAM must mean float32 there.
On a CPU every precision computes in float32, so these tests read the lowered program:
each `dot_general` and `convolution` carries the precision it will run at.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import method as peft_method
from mopeft_jax.train import partition
from mopeft_jax.train.step import TrainState, make_train_step

# XLA's attention: the chunked kernel's backward is a custom VJP, traced after the model
# returns, which keeps JAX's default precision (see `Sam`).
TINY = SamConfig.tiny(attention="xla")


def matmul_precisions(lowered_text: str) -> list:
    """The precision of every dot_general and convolution of a lowered StableHLO module."""
    ops = [
        line
        for line in lowered_text.splitlines()
        if "stablehlo.dot_general" in line or "stablehlo.convolution" in line
    ]
    assert ops, "no matmuls in the program"
    found = []
    for line in ops:
        names = set(re.findall(r"precision (\w+)>|precision = \[(\w+), (\w+)\]", line))
        names = {n for group in names for n in group if n}
        found.append(",".join(sorted(names)) or "none")
    return found


def encode_text(config: SamConfig) -> str:
    model = Sam(config)
    params = jax.eval_shape(model.init_params, jax.random.key(0))
    images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
    encode = functools.partial(model.apply, method=Sam.encode_image)
    return jax.jit(encode).lower({"params": params}, images).as_text()


def train_step_text(config: SamConfig) -> str:
    """The lowered MoPEFT train step of `config` on one image with two box prompts."""
    model = Sam(config)
    params = jax.eval_shape(model.init_params, jax.random.key(0))
    labels = partition.label_params(params, peft_method("mopeft").trainable)
    trainable, frozen = partition.split(params, labels)
    optimizer = partition.make_optimizer(
        partition.OptimizerConfig(), partition.split(labels, labels)[0]
    )
    state = jax.eval_shape(functools.partial(TrainState.create, optimizer=optimizer), trainable)
    size, low = config.image_size, config.low_res_mask_size
    batch = dict(
        image=jax.ShapeDtypeStruct((1, size, size, 3), np.float32),
        boxes=jax.ShapeDtypeStruct((1, 2, 4), np.float32),
        points=jax.ShapeDtypeStruct((1, 2, 2), np.float32),
        masks=jax.ShapeDtypeStruct((1, 2, low, low), np.float32),
        valid=jax.ShapeDtypeStruct((1, 2), np.bool_),
    )
    step = jax.jit(make_train_step(model, optimizer))
    return step.lower(state, frozen, batch).as_text()


def test_float32_defaults_to_full_precision_and_16_bit_dtypes_to_the_fastest():
    assert SamConfig().precision == "highest"
    assert SamConfig(dtype="float64").precision == "highest"
    assert SamConfig(dtype="bfloat16").precision == "default"
    assert SamConfig(dtype="float16").precision == "default"
    assert SamConfig(matmul_precision="high").precision == "high"
    assert SamConfig(dtype="bfloat16", matmul_precision="highest").precision == "highest"


def test_unknown_precision_is_rejected():
    with pytest.raises(
        ValueError,
        match=r"matmul_precision 'tf32' is not None or one of \('highest', 'high', 'default'\)",
    ):
        SamConfig(matmul_precision="tf32")


@pytest.mark.parametrize(
    "precision, expected", [(None, "HIGHEST"), ("high", "HIGH"), ("default", "DEFAULT")]
)
def test_encoder_matmuls_and_convolutions_carry_the_precision(precision, expected):
    found = matmul_precisions(encode_text(TINY.replace(matmul_precision=precision)))
    assert set(found) == {expected}, found


def test_the_train_step_backward_pass_keeps_full_precision():
    """Forward, backward (transposed ops), decoder and gates of a float32 MoPEFT step."""
    config = TINY.replace(peft=peft_method("mopeft").peft)
    found = matmul_precisions(train_step_text(config))
    assert set(found) == {"HIGHEST"} and len(found) > 100, found
    fast = matmul_precisions(train_step_text(config.replace(matmul_precision="default")))
    assert set(fast) == {"DEFAULT"}


def test_a_global_default_does_not_override_the_config():
    with jax.default_matmul_precision("bfloat16"):
        found = matmul_precisions(encode_text(TINY))
    assert set(found) == {"HIGHEST"}
