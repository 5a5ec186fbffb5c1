"""The attention kernels agree with a direct computation of the formula, and so do
their gradients (the chunked kernel has its own flash-attention style VJP); each of
SAM's attention calls gets a kernel that supports it on every backend."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mopeft_jax import Sam, SamConfig
from mopeft_jax.peft import preset
from mopeft_jax.sam import attention
from mopeft_jax.sam.attention import choose_implementation as choose
from mopeft_jax.sam.attention import dot_product_attention
from mopeft_jax.train.step import TrainState, make_train_step


def reference_attention(q, k, v, scale, rel_h, rel_w, num_prefix):
    """softmax(scale q.k + bias) v in float64, the bias built position by position."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    logits = np.einsum("bqnh,bknh->bnqk", q * scale, k)
    if rel_h is not None:
        kh, kw = rel_h.shape[-1], rel_w.shape[-1]
        for key in range(kh * kw):
            logits[..., num_prefix + key] += (
                rel_h[..., key // kw] + rel_w[..., key % kw]
            ).transpose(0, 2, 1)
    logits -= logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknh->bqnh", probs, v)


def plain_attention(q, k, v, scale, rel_h, rel_w, num_prefix):
    """The same formula in plain jnp ops, for jax.grad to differentiate."""
    logits = jnp.einsum("bqnh,bknh->bnqk", q * scale, k)
    if rel_h is not None:
        kh, kw = rel_h.shape[-1], rel_w.shape[-1]
        bias = rel_h.transpose(0, 2, 1, 3)[..., :, None] + rel_w.transpose(0, 2, 1, 3)[..., None, :]
        bias = bias.reshape(*bias.shape[:-2], kh * kw)
        prefix_bias = jnp.zeros((*bias.shape[:-1], num_prefix), bias.dtype)
        logits = logits + jnp.concatenate([prefix_bias, bias], axis=-1)
    return jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(logits, axis=-1), v)


def random_inputs(grid, num_prefix, with_bias, seed=0):
    rng = np.random.RandomState(seed)
    b, n, h = 2, 3, 8
    kh, kw = grid
    tq = kh * kw
    q = rng.randn(b, tq, n, h).astype(np.float32)
    k = rng.randn(b, num_prefix + tq, n, h).astype(np.float32)
    v = rng.randn(b, num_prefix + tq, n, h).astype(np.float32)
    rel_h = rng.randn(b, tq, n, kh).astype(np.float32) if with_bias else None
    rel_w = rng.randn(b, tq, n, kw).astype(np.float32) if with_bias else None
    return q, k, v, rel_h, rel_w


# (5, 6): the chunked kernel's flat key layout; (2, 16): its split prefix/grid layout.
GRIDS = [(5, 6), (2, 16)]


@pytest.mark.parametrize(
    "implementation, chunk", [("xla", 1024), ("chunked", 7), ("chunked", 64), ("auto", 16)]
)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("num_prefix", [0, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernels_match_reference(implementation, chunk, grid, num_prefix, with_bias):
    q, k, v, rel_h, rel_w = random_inputs(grid, num_prefix, with_bias)
    h = q.shape[-1]
    out = dot_product_attention(
        q,
        k,
        v,
        scale=h**-0.5,
        rel_h=rel_h,
        rel_w=rel_w,
        num_prefix=num_prefix,
        implementation=implementation,
        query_chunk=chunk,
    )
    expected = reference_attention(q, k, v, h**-0.5, rel_h, rel_w, num_prefix)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_both_chunked_layouts_and_padded_chunks_are_tested():
    """The gradient tests below cover the split and flat layouts and a padded last chunk."""
    flat = attention._layout(6, 30, 33, (5, 6), True, 3, 8)
    split = attention._layout(6, 32, 35, (2, 16), True, 3, 12)
    assert not flat.split and split.split
    assert flat.chunk * flat.num_chunks > 30 and split.chunk * split.num_chunks > 32


@pytest.mark.parametrize(
    "implementation, chunk",
    # "auto" is "chunked" with a bias on the CPU and "xla" without one at these sizes.
    [("xla", 1024), ("chunked", 8), ("chunked", 12), ("chunked", 1024)],
)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("num_prefix", [0, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradients_match_plain_attention(implementation, chunk, grid, num_prefix, with_bias):
    """Gradients w.r.t. q, k (prefix keys included), v, rel_h and rel_w, through jit."""
    inputs = random_inputs(grid, num_prefix, with_bias, seed=1)
    h = inputs[0].shape[-1]
    cotangent = np.random.RandomState(2).randn(*inputs[0].shape).astype(np.float32)
    argnums = (0, 1, 2, 3, 4) if with_bias else (0, 1, 2)

    def loss(kernel):
        def fn(q, k, v, rel_h, rel_w):
            return jnp.sum(kernel(q, k, v, h**-0.5, rel_h, rel_w, num_prefix) * cotangent)

        return jax.jit(jax.grad(fn, argnums=argnums))(*inputs)

    def kernel(q, k, v, scale, rel_h, rel_w, num_prefix):
        return dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            rel_h=rel_h,
            rel_w=rel_w,
            num_prefix=num_prefix,
            implementation=implementation,
            query_chunk=chunk,
        )

    actual, expected = loss(kernel), loss(plain_attention)
    for name, a, e in zip(("q", "k", "v", "rel_h", "rel_w"), actual, expected):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=0, atol=2e-5, err_msg=name)
        assert np.abs(e).max() > 1e-2, name  # a real gradient, not zeros on both sides


def test_vit_b_steps():
    """A global block of ViT-B walks one head in 1024-query chunks; its 14x14 windows
    (25 per image, 12 heads, 10 prefix keys) go 25 heads of 196 queries a step."""
    global_block = attention._layout(12, 4096, 4106, (64, 64), True, 10, 1024)
    assert (global_block.heads, global_block.chunk, global_block.num_chunks) == (1, 241, 17)
    windows = attention._layout(300, 196, 206, (14, 14), True, 10, 1024)
    assert (windows.heads, windows.chunk, windows.num_chunks) == (25, 196, 1)


@pytest.mark.parametrize(
    "step_logits, heads, chunk, num_chunks",
    # A small `_STEP_LOGITS` splits even a long `query_chunk` into several steps, and
    # groups fewer heads than there are (6) into a step.
    [(4 * 35, 1, 4, 8), (2 * 32 * 35, 2, 32, 1)],
)
def test_steps_are_capped_by_logits_per_step(monkeypatch, step_logits, heads, chunk, num_chunks):
    monkeypatch.setattr(attention, "_STEP_LOGITS", step_logits)
    layout = attention._layout(6, 32, 35, (2, 16), True, 3, 1024)
    assert (layout.heads, layout.chunk, layout.num_chunks) == (heads, chunk, num_chunks)
    q, k, v, rel_h, rel_w = random_inputs((2, 16), 3, True)
    h = q.shape[-1]

    def loss(q, k, v, rel_h, rel_w):
        out = dot_product_attention(
            q, k, v, scale=h**-0.5, rel_h=rel_h, rel_w=rel_w, num_prefix=3, implementation="chunked"
        )
        return jnp.sum(out**2), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(
        q, k, v, rel_h, rel_w
    )
    expected = jax.grad(
        lambda *a: jnp.sum(plain_attention(*a[:3], h**-0.5, *a[3:], 3) ** 2),
        argnums=(0, 1, 2, 3, 4),
    )(q, k, v, rel_h, rel_w)
    np.testing.assert_allclose(
        out, reference_attention(q, k, v, h**-0.5, rel_h, rel_w, 3), atol=1e-5
    )
    for a, e in zip(grads, expected):
        np.testing.assert_allclose(a, e, rtol=0, atol=2e-5)


def record_attention_calls(fn, *args):
    """The keyword arguments of every `choose_implementation` call that tracing
    `fn(*args)` makes (shapes only, nothing runs)."""
    calls = []

    def record(requested, **call):
        calls.append(call)
        return choose(requested, **call)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention, "choose_implementation", record)
        jax.eval_shape(fn, *args)
    return calls


@pytest.fixture(scope="module")
def vit_b_calls():
    """Attention calls of bfloat16 ViT-B SAM's forward (no prefix) and of a MoPEFT train
    step (10 prefix keys per block) on one 1024x1024 image with box prompts."""
    image = jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)
    sam = Sam(SamConfig.vit_b(dtype="bfloat16"))
    sam_params = jax.eval_shape(lambda: sam.init_params(jax.random.key(0)))
    forward = lambda params, image, boxes: sam.apply({"params": params}, image, boxes=boxes)  # noqa: E731
    boxes = jax.ShapeDtypeStruct((1, 4), jnp.float32)
    calls = record_attention_calls(forward, sam_params, image, boxes)

    model = Sam(sam.config.replace(peft=preset("mopeft")))
    params = jax.eval_shape(lambda: model.init_params(jax.random.key(0)))
    optimizer = optax.adam(1e-3)
    # Everything trains: which params do makes no difference to the attention calls.
    state = jax.eval_shape(lambda t: TrainState.create(t, optimizer), params)
    batch = {
        "image": image,
        "boxes": jax.ShapeDtypeStruct((1, 2, 4), jnp.float32),
        "masks": jax.ShapeDtypeStruct((1, 2, 256, 256), jnp.float32),
        "valid": jax.ShapeDtypeStruct((1, 2), jnp.bool_),
    }
    return calls + record_attention_calls(make_train_step(model, optimizer), state, {}, batch)


def call_kind(call):
    """Which attention of SAM a call is, from its shapes."""
    if call["has_bias"]:
        return f"encoder {'window' if call['q_len'] == 196 else 'global'} +{call['k_len'] - call['q_len']}"
    if call["q_len"] == call["k_len"]:
        return "decoder tokens"
    return "decoder token->image" if call["q_len"] < call["k_len"] else "decoder image->token"


def expected_choice(requested, backend, kind, dtype):
    """The kernel SamConfig.attention = `requested` should run for a call of `kind`."""
    encoder = kind.startswith("encoder")
    if requested == "auto":
        if encoder:
            return "flash" if backend == "gpu" else "chunked"
        return "xla"
    if requested == "cudnn":
        # The decoder's calls have 7 tokens, which cuDNN rejects in training.
        return "cudnn" if backend == "gpu" and encoder and dtype == "bfloat16" else "xla"
    return requested


def test_vit_b_attention_calls(vit_b_calls):
    """The recorded calls are all of SAM's attentions, with and without prefix keys."""
    kinds = {call_kind(call) for call in vit_b_calls}
    assert kinds == {
        "encoder window +0",
        "encoder window +10",
        "encoder global +0",
        "encoder global +10",
        "decoder tokens",
        "decoder token->image",
        "decoder image->token",
    }
    # 12 encoder blocks and 7 decoder attentions, in the forward and in the train step.
    assert len(vit_b_calls) == 2 * (12 + 7)
    assert {c["q_len"] for c in vit_b_calls if not c["has_bias"]} == {7, 4096}
    assert all(c["dtype"] == jnp.bfloat16 for c in vit_b_calls)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("backend", ["gpu", "tpu", "cpu"])
@pytest.mark.parametrize("requested", ["auto", "xla", "cudnn", "chunked", "flash"])
def test_choice_for_every_attention_call_of_vit_b(vit_b_calls, requested, backend, dtype):
    for call in vit_b_calls:
        choice = choose(requested, **dict(call, backend=backend, dtype=jnp.dtype(dtype)))
        assert choice == expected_choice(requested, backend, call_kind(call), dtype), call


def test_cudnn_falls_back_to_xla_where_unsupported():
    """On the CPU, and for odd lengths or float32 on a GPU, "cudnn" runs XLA's kernel."""
    q, k, v, _, _ = random_inputs((5, 6), 0, False)
    h = q.shape[-1]
    expected = dot_product_attention(q, k, v, scale=h**-0.5, implementation="xla")
    actual = dot_product_attention(q, k, v, scale=h**-0.5, implementation="cudnn")
    np.testing.assert_array_equal(actual, expected)
    shape = dict(q_len=7, k_len=4096, head_dim=16, has_bias=False)
    assert choose("cudnn", backend="gpu", dtype=jnp.bfloat16, **shape) == "xla"
    shape.update(q_len=8)
    assert choose("cudnn", backend="gpu", dtype=jnp.bfloat16, **shape) == "cudnn"
    assert choose("cudnn", backend="gpu", dtype=jnp.float32, **shape) == "xla"
    assert choose("cudnn", backend="gpu", dtype=jnp.float64, **dict(shape, has_bias=True)) == "xla"
    assert (
        choose("auto", backend="gpu", dtype=jnp.float64, **dict(shape, has_bias=True)) == "chunked"
    )
    with pytest.raises(ValueError, match="'fast' is not one of"):
        choose("fast", backend="cpu", dtype=jnp.float32, **shape)
