"""The Pallas flash-attention kernel (interpret mode on the CPU) against XLA's attention:
values and gradients, the encoder with prefix tuning, memory, and lowering for CUDA."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from sam_configs import SMALL_CONFIGS

from mopeft_jax import Sam
from mopeft_jax.peft import preset
from mopeft_jax.sam import flash_attention as flash_lib
from mopeft_jax.sam.attention import dot_product_attention
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.train.partition import kind_of, merge, split


def random_inputs(batch, heads, head_dim, grid, num_keys, dtype, seed=0):
    """q (B, Tq, N, H), k, v (B, Tk, N, H) and, for a (kh, kw) grid, rel_h, rel_w.

    With a grid Tq = kh*kw and the first Tk - Tq keys are prefixes; without one,
    Tq = num_keys[0] and Tk = num_keys[1].
    """
    rng = np.random.RandomState(seed)
    tq, tk = (grid[0] * grid[1], num_keys + grid[0] * grid[1]) if grid else num_keys
    shapes = [(batch, tq, heads, head_dim)] + [(batch, tk, heads, head_dim)] * 2
    if grid:
        shapes += [(batch, tq, heads, grid[0]), (batch, tq, heads, grid[1])]
    return [jnp.asarray(rng.randn(*s), dtype) for s in shapes]


def attention_and_vjp(implementation, inputs, num_prefix, cotangent):
    """Output and gradients w.r.t. every input of `dot_product_attention`, in one jit."""

    @jax.jit
    def run(inputs, cotangent):
        def attend(*args):
            q, k, v, *rel = args
            rel_h, rel_w = rel or (None, None)
            return dot_product_attention(
                q,
                k,
                v,
                scale=q.shape[-1] ** -0.5,
                rel_h=rel_h,
                rel_w=rel_w,
                num_prefix=num_prefix,
                implementation=implementation,
            )

        out, vjp = jax.vjp(attend, *inputs)
        return out, vjp(cotangent)

    return run(inputs, cotangent)


def assert_close(actual, expected, rel, name=""):
    """max |actual - expected| <= rel * max |expected|, in float64."""
    actual, expected = (np.asarray(x, np.float64) for x in (actual, expected))
    assert actual.shape == expected.shape, name
    error, scale = np.abs(actual - expected).max(), np.abs(expected).max()
    assert error <= rel * scale, f"{name}: max error {error:.3g}, max |expected| {scale:.3g}"


CASES = {
    # 3x3 windows (rows and columns padded to 4) with 10 prefix keys: padded and masked
    # in every direction, as ViT-B's 14x14 windows with prefix tuning.
    "window_prefix": dict(batch=3, heads=2, head_dim=8, grid=(3, 3), num_keys=10),
    # A 9x20 grid: 3 query blocks, 5 key blocks of two 32-slot rows (the last one half
    # padding), 3 prefix keys and a head dim padded from 24 to 32.
    "grid_prefix": dict(batch=1, heads=2, head_dim=24, grid=(9, 20), num_keys=3),
    # An 8x16 grid that fills its blocks exactly (no mask), as ViT-B's global 64x64.
    "grid_exact": dict(batch=1, heads=2, head_dim=16, grid=(8, 16), num_keys=0),
    # The mask decoder's token -> image and image -> token attention (no bias).
    "tokens_to_image": dict(batch=2, heads=2, head_dim=16, grid=None, num_keys=(7, 70)),
    "image_to_tokens": dict(batch=2, heads=2, head_dim=16, grid=None, num_keys=(70, 7)),
}


@pytest.mark.parametrize(
    "case, dtype, rel",
    [(name, "float32", 1e-5) for name in CASES]
    # bfloat16 logits and probabilities round at ~4e-3; the reference runs in float32
    # on the same (rounded) inputs.
    + [("window_prefix", "bfloat16", 2e-2), ("grid_prefix", "bfloat16", 2e-2)],
)
def test_values_and_gradients_match_xla(case, dtype, rel):
    kwargs = CASES[case]
    num_prefix = kwargs["num_keys"] if kwargs["grid"] else 0
    inputs = random_inputs(**kwargs, dtype=dtype)
    cotangent = jnp.asarray(np.random.RandomState(1).randn(*inputs[0].shape), dtype)
    out, grads = attention_and_vjp("flash", inputs, num_prefix, cotangent)
    upcast = [x.astype(jnp.float32) for x in (*inputs, cotangent)]
    expected_out, expected_grads = attention_and_vjp("xla", upcast[:-1], num_prefix, upcast[-1])
    assert out.dtype == jnp.dtype(dtype)
    assert_close(out, expected_out, rel, "out")
    for name, grad, expected in zip(("q", "k", "v", "rel_h", "rel_w"), grads, expected_grads):
        assert grad.dtype == jnp.dtype(dtype), name
        assert np.abs(expected).max() > 1e-2, name  # a real gradient, not zeros on both sides
        assert_close(grad, expected, rel, name)


def test_vit_b_layouts():
    """ViT-B's 14x14 windows take blocks of four 16-slot rows (the last block half
    padding) and 10 prefix keys one 16-key block; its global 64x64 grid one row a block."""
    windows = flash_lib._make_layout(196, 64, 10, (14, 14), interpret=True)
    assert windows.block_q == 64 and windows.num_q_blocks == 4 and windows.head_dim == 64
    assert windows.grid == flash_lib._KeyBlocks(16, 14, 4, 14 * 16, 4, True)
    assert windows.plain == flash_lib._KeyBlocks(16, 16, 1, 10, 1, False)
    global_ = flash_lib._make_layout(4096, 64, 0, (64, 64), interpret=True)
    assert global_.grid == flash_lib._KeyBlocks(64, 64, 1, 64 * 64, 64, True)
    assert global_.plain is None and global_.num_q_blocks == 64
    assert flash_lib._key_mask(global_.grid, 0) is None  # blocks exactly full: no mask


@pytest.fixture(scope="module")
def mopeft_encoder():
    """A small SAM with MoPEFT (prefix keys in windows and a global block), its
    trainable and frozen params and an image."""
    # A windowed block (3x3 windows, padded grid) and a global one, with prefix keys.
    config = SMALL_CONFIGS["windowed_padded"].replace(encoder_depth=2, peft=preset("mopeft"))
    # Random values for every param, LoRA's B and the adapters' up-projections too (zero
    # at init, which would hide their gradients' inputs); no init to compile.
    shapes = jax.eval_shape(lambda: Sam(config).init_params(jax.random.key(0)))
    rng = np.random.RandomState(0)
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(0.2 * rng.randn(*x.shape), x.dtype), shapes
    )

    def label(path, _):  # the PEFT layers and their gates train
        return "peft" if kind_of(tuple(k.key for k in path)) in ("gate", "peft") else "frozen"

    trainable, frozen = split(params, jax.tree_util.tree_map_with_path(label, params))
    images = jnp.asarray(np.random.RandomState(0).randn(1, 128, 128, 3), jnp.float32)
    return config, trainable, frozen, images


@functools.partial(jax.jit, static_argnums=0)
def embedding_and_peft_grads(config, trainable, frozen, images, cotangent):
    def embed(trainable):
        variables = {"params": merge(trainable, frozen)}
        return Sam(config).apply(variables, images, method=Sam.encode_image)

    embedding, vjp = jax.vjp(embed, trainable)
    return embedding, vjp(cotangent)[0]


def test_encoder_with_prefix_matches_xla(mopeft_encoder):
    """Sam.encode_image with attention="flash" against "xla": the embedding and the
    gradients of every PEFT parameter (prefix, LoRA, adapter, gates)."""
    config, trainable, frozen, images = mopeft_encoder
    size = config.embedding_size
    cotangent = jnp.asarray(np.random.RandomState(1).randn(1, size, size, 256 // 8), jnp.float32)
    results = {
        name: embedding_and_peft_grads(
            config.replace(attention=name), *mopeft_encoder[1:], cotangent
        )
        for name in ("flash", "xla")
    }
    assert_close(results["flash"][0], results["xla"][0], 1e-5, "embedding")
    flat_grads = {
        name: jax.tree_util.tree_flatten_with_path(grads)[0] for name, (_, grads) in results.items()
    }
    assert any("prefix" in jax.tree_util.keystr(path) for path, _ in flat_grads["xla"])
    for (path, grad), (_, expected) in zip(flat_grads["flash"], flat_grads["xla"]):
        assert_close(grad, expected, 1e-4, jax.tree_util.keystr(path))


# One global block over a 64x64 grid: a (B, heads, T, T) float32 buffer is 256 MiB, far
# more than every other activation (38 MB in all with the chunked kernel).
MEMORY_CONFIG = SamConfig(
    encoder_embed_dim=32,
    encoder_depth=1,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(0,),
    image_size=512,
    patch_size=8,
    window_size=0,
    prompt_embed_dim=32,
    decoder_mlp_dim=32,
    decoder_num_heads=4,
    iou_head_hidden_dim=32,
)


def compiled_temp_bytes(attention):
    """Temporary memory of the compiled gradient of the encoder w.r.t. its params."""
    config = MEMORY_CONFIG.replace(attention=attention)
    model = Sam(config)
    params = jax.eval_shape(lambda: model.init_params(jax.random.key(0)))
    images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)

    def loss(params, images):
        return jnp.sum(model.apply({"params": params}, images, method=Sam.encode_image))

    compiled = jax.jit(jax.grad(loss)).lower(params, images).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_no_logits_buffer_in_the_gradient():
    """The flash path's train-step memory holds no (B, heads, T, T) buffer; XLA's does."""
    tokens = MEMORY_CONFIG.embedding_size**2
    logits_bytes = MEMORY_CONFIG.encoder_num_heads * tokens * tokens * 4
    flash, xla = compiled_temp_bytes("flash"), compiled_temp_bytes("xla")
    assert xla > logits_bytes, (xla, logits_bytes)
    # Measured: 61 MB for flash (46 MB with the chunked kernel), 1084 MB for XLA,
    # against 268 MB for one buffer.
    assert flash < logits_bytes / 2, (flash, logits_bytes)


TRITON_CALL = "__gpu$xla.gpu.triton"  # XLA's custom call for Pallas Triton kernels


def export_for_cuda(fn, *args):
    """StableHLO text of `fn` lowered for CUDA, with Triton custom calls allowed."""
    triton = jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)
    exported = jax.export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[triton])
    return exported(*args).mlir_module()


def cross_lowering_error():
    """None where this jaxlib lowers a trivial Pallas Triton kernel for CUDA on this
    host, else the error."""

    def copy(x_ref, o_ref):
        o_ref[...] = x_ref[...]

    x = jax.ShapeDtypeStruct((16,), jnp.float32)
    kernel = pl.pallas_call(copy, out_shape=x, compiler_params=plgpu.CompilerParams())
    try:
        export_for_cuda(kernel, x)
    except Exception as error:  # noqa: BLE001 - whatever it is, the kernel cannot be checked
        return f"{type(error).__name__}: {error}"
    return None


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_lowers_for_cuda(dtype):
    """ViT-B's windowed (25 windows of 14x14) and global (64x64) attention, with and
    without 10 prefix keys, forward and gradient, lower to Triton kernels for CUDA:
    one kernel forward, then dq, dk/dv of the grid keys and of the prefix keys."""
    error = cross_lowering_error()
    if error:
        pytest.skip(f"this jaxlib cannot lower Pallas Triton kernels for CUDA here: {error}")
    for batch, (kh, kw) in [(25, (14, 14)), (1, (64, 64))]:
        for num_prefix in (0, 10):
            tq, tk = kh * kw, num_prefix + kh * kw
            shapes = [(batch, tq, 12, 64), (batch, tk, 12, 64), (batch, tk, 12, 64)]
            shapes += [(batch, tq, 12, kh), (batch, tq, 12, kw)]
            args = [jax.ShapeDtypeStruct(s, dtype) for s in shapes]
            attend = functools.partial(
                flash_lib.flash_attention, num_prefix=num_prefix, interpret=False
            )
            loss = lambda *a: jnp.sum(attend(*a).astype(jnp.float32))  # noqa: E731
            grad = jax.grad(loss, argnums=(0, 1, 2, 3, 4))
            assert export_for_cuda(attend, *args).count(TRITON_CALL) == 1
            assert export_for_cuda(grad, *args).count(TRITON_CALL) == 3 + bool(num_prefix)
