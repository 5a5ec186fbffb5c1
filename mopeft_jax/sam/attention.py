"""Multi-head attention kernels shared by the image encoder and the mask decoder.

All tensors use the layout of `jax.nn.dot_product_attention`: (B, T, N, H) for
batch, tokens, heads and head width.

The image encoder adds SAM's decomposed relative-position bias: a query at grid
position (i, j) attending to a key at (u, v) gets `rel_h[.., u] + rel_w[.., v]`.
Materialising that bias for a global block of ViT-B is a (B, 12, 4096, 4096)
tensor, and on a CPU a plain batched attention over it is memory-bound. The
chunked kernel therefore walks over steps of a few MB of logits, forming the bias
of one step at a time: a query chunk of one head, or all queries of several heads
where sequences are short (windows).
Its custom VJP is flash attention's backward: it recomputes each chunk's logits
instead of storing them, so a train step with frozen encoder weights costs about
one more forward's worth of matmuls and no (B, N, Tq, Tk) activations.
Optional prefix keys/values (prefix tuning) come before the spatial keys and get
no positional bias.

On GPUs the encoder's attention goes to a Pallas flash-attention kernel
(`flash_attention.py`) that forms the bias in-kernel. `choose_implementation` picks
a kernel per call from its shapes, dtype and backend.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from mopeft_jax.sam.config import ATTENTION_IMPLEMENTATIONS
from mopeft_jax.sam.flash_attention import flash_attention

# Above this many logits per (batch, head), "auto" chunks queries on the CPU. With a
# rel-pos bias (the image encoder) it always does: on ViT-B's 14x14 windows the
# chunked kernel is ~1.8x faster than XLA's attention forward and ~1.4x backward.
_CHUNK_THRESHOLD = 512 * 512


# Logits per step of the chunked kernel. Steps of ~4 MB of logits stay in cache; on
# ViT-B's global blocks that makes the softmax and its backward run ~2x faster than
# in 1024-query steps.
_STEP_LOGITS = 256 * 4096


def _expand_bias(rel_h, rel_w, num_prefix, dtype):
    """Decomposed bias (..., Tq, kh), (..., Tq, kw) -> (..., Tq, num_prefix + kh*kw)."""
    bias = rel_h[..., :, None] + rel_w[..., None, :]
    bias = bias.reshape(*bias.shape[:-2], -1)
    if num_prefix:
        bias = jnp.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(num_prefix, 0)])
    return bias.astype(dtype)


class _Layout(NamedTuple):
    """Static shape of the chunked kernel's keys and steps.

    A step is `heads` heads by `chunk` queries. With `split`, a step's logits are the
    prefix keys' (g, c, P) and the grid keys' (g, c, kh, kw): the bias adds and
    everything elementwise after them are then plain broadcasts, which XLA CPU
    vectorises (on a flat (g, c, P + kh*kw) axis it fuses them with index arithmetic
    that it does not: ~3x slower on ViT-B's global blocks). On narrow grids (windows,
    kw = 14) the flat (g, c, P + kh*kw) logits are faster.
    """

    num_prefix: int
    grid: Tuple[int, int]  # (kh, kw); (1, Tk) without a bias
    with_bias: bool
    split: bool
    heads: int  # heads per step
    chunk: int  # queries per step
    num_chunks: int  # steps per head


def _layout(num_heads, tq, tk, grid, with_bias, num_prefix, query_chunk):
    """At most `query_chunk` queries and about `_STEP_LOGITS` logits a step, balanced
    so that little padding is needed. Where one step holds all of a head's queries
    (ViT-B's 14x14 windows: 196), it takes as many heads as fit, the most that divide
    the number of heads: per-step overhead, not arithmetic, dominates steps of a few
    thousand logits."""
    limit = max(1, min(query_chunk, tq, _STEP_LOGITS // tk))
    num_chunks = -(-tq // limit)
    chunk = -(-tq // num_chunks)
    heads = 1
    if num_chunks == 1:
        most = max(1, min(num_heads, _STEP_LOGITS // (chunk * tk)))
        heads = max(d for d in range(1, most + 1) if num_heads % d == 0)
    split = with_bias and grid[1] % 16 == 0
    return _Layout(num_prefix, grid, with_bias, split, heads, chunk, num_chunks)


def _to_steps(x, layout):
    """(G, Tq, D) -> (G/heads, num_chunks, heads, chunk, D), zero-padding Tq; None stays None."""
    if x is None:
        return None
    steps = layout.num_chunks * layout.chunk
    x = jnp.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0)))
    x = x.reshape(-1, layout.heads, layout.num_chunks, layout.chunk, x.shape[-1])
    return x.transpose(0, 2, 1, 3, 4)


def _from_steps(x, tq):
    """Inverse of `_to_steps`: (G/heads, num_chunks, heads, chunk, D) -> (G, Tq, D)."""
    groups, num_chunks, heads, chunk, d = x.shape
    x = x.transpose(0, 2, 1, 3, 4).reshape(groups * heads, num_chunks * chunk, d)
    return x[:, :tq]


def _key_parts(x, layout):
    """(G, Tk, H) -> the (prefix, rest), each (G/heads, heads, keys, H), that the steps
    multiply separately; prefix may be None."""
    x = x.reshape(-1, layout.heads, *x.shape[1:])
    p = layout.num_prefix if layout.split else 0
    return (x[:, :, :p] if p else None), x[:, :, p:]


def _matmul(a, b):
    """Per head: (g, m, k) @ (g, k, n) -> (g, m, n)."""
    return jnp.einsum("gmk,gkn->gmn", a, b)


def _matmul_t(a, b):
    """Per head: (g, m, k) @ (g, n, k)^T -> (g, m, n)."""
    return jnp.einsum("gmk,gnk->gmn", a, b)


def _step_logits(q, k_prefix, k_rest, rel_h, rel_w, layout):
    """float32 logits of one step: (prefix (g, c, P) or None, rest (g, c, kh, kw) or (g, c, 1, Tk))."""
    stat = jnp.promote_types(q.dtype, jnp.float32)
    rest = _matmul_t(q, k_rest)
    if layout.split:
        rest = rest.reshape(*q.shape[:2], *layout.grid) + rel_h[..., None] + rel_w[..., None, :]
    else:
        if layout.with_bias:
            rest += _expand_bias(rel_h, rel_w, layout.num_prefix, rest.dtype)
        rest = rest[:, :, None, :]
    prefix = None if k_prefix is None else _matmul_t(q, k_prefix).astype(stat)
    return prefix, rest.astype(stat)


def _row_reduce(fn, prefix, rest):
    """Reduce each query's logits (prefix (g, c, P) or None, rest (g, c, x, y)) to (g, c)."""
    result = fn(rest[:, :, 0], axis=2) if rest.shape[2] == 1 else fn(rest, axis=(2, 3))
    return result if prefix is None else fn(jnp.stack([fn(prefix, axis=2), result]), axis=0)


def _flash_forward(q, k, v, rel_h, rel_w, layout):
    """Output (G, Tq, H) and float32 logsumexp (G, Tq) of heads-first attention."""
    tq = q.shape[1]

    def one_group(args):
        q_g, k_prefix, k_rest, v_prefix, v_rest, rel_h_g, rel_w_g = args

        def one_step(step):
            q_s, rel_h_s, rel_w_s = step
            prefix, rest = _step_logits(q_s, k_prefix, k_rest, rel_h_s, rel_w_s, layout)
            # jax.nn.softmax's arithmetic, keeping the row max and sum for the backward.
            row_max = _row_reduce(jnp.max, prefix, rest)
            rest = jnp.exp(rest - row_max[..., None, None])
            if prefix is not None:
                prefix = jnp.exp(prefix - row_max[..., None])
            row_sum = _row_reduce(jnp.sum, prefix, rest)
            probs = (rest / row_sum[..., None, None]).astype(v_rest.dtype)
            out = _matmul(probs.reshape(*q_s.shape[:2], -1), v_rest)
            if prefix is not None:
                out += _matmul((prefix / row_sum[..., None]).astype(v_prefix.dtype), v_prefix)
            return out, (row_max + jnp.log(row_sum))[..., None]

        return jax.lax.map(one_step, (q_g, rel_h_g, rel_w_g))

    steps = lambda x: _to_steps(x, layout)  # noqa: E731
    out, lse = jax.lax.map(
        one_group,
        (
            steps(q),
            *_key_parts(k, layout),
            *_key_parts(v, layout),
            steps(rel_h),
            steps(rel_w),
        ),
    )
    return _from_steps(out, tq), _from_steps(lse, tq)[..., 0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash_attention(q, k, v, rel_h, rel_w, layout):
    """Heads-first attention: q (G, Tq, H), k, v (G, Tk, H), rel_* (G, Tq, kh|kw) or None.

    The custom VJP recomputes each step's logits from q, k and the decomposed bias
    (flash attention's backward) instead of letting the reverse of `lax.map` store
    every step's logits and probabilities, and forms all gradients with plain
    matmuls and broadcasts step by step.
    """
    return _flash_forward(q, k, v, rel_h, rel_w, layout)[0]


def _flash_attention_fwd(q, k, v, rel_h, rel_w, layout):
    out, lse = _flash_forward(q, k, v, rel_h, rel_w, layout)
    return out, (q, k, v, rel_h, rel_w, out, lse)


def _flash_attention_bwd(layout, residuals, d_out):
    q, k, v, rel_h, rel_w, out, lse = residuals
    num_heads, tq, h = q.shape  # all heads (G); `layout.heads` of them go in a step
    stat = jnp.promote_types(q.dtype, jnp.float32)
    # rowsum(dO * O) = rowsum(P * dP), the per-row term of the softmax backward.
    delta = jnp.sum(d_out.astype(stat) * out.astype(stat), axis=-1)
    num_split = layout.num_prefix if layout.split else 0

    def one_group(args):
        q_g, d_out_g, stats_g, k_prefix, k_rest, v_prefix, v_rest, rel_h_g, rel_w_g = args

        def one_step(acc, step):
            q_s, d_out_s, stats, rel_h_s, rel_w_s = step
            prefix, rest = _step_logits(q_s, k_prefix, k_rest, rel_h_s, rel_w_s, layout)
            lse_s, delta_s = stats[..., 0], stats[..., 1]
            probs = jnp.exp(rest - lse_s[..., None, None])
            d_probs = _matmul_t(d_out_s, v_rest).reshape(rest.shape).astype(stat)
            d_logits = probs * (d_probs - delta_s[..., None, None])
            probs = probs.reshape(*q_s.shape[:2], -1)
            d_flat = d_logits.reshape(*q_s.shape[:2], -1)
            # dK^T and dV^T ((H, keys) = (chunk, H)^T @ (chunk, keys) per head): XLA CPU
            # runs this form ~1.6x faster than (keys, H) = (chunk, keys)^T @ (chunk, H).
            # Prefix and other keys accumulate apart: updating slices of one (H, Tk)
            # carry costs a scatter-add per step.
            (d_kt_prefix, d_kt), (d_vt_prefix, d_vt) = acc
            d_kt += _matmul(q_s.swapaxes(1, 2), d_flat.astype(q.dtype))
            d_vt += _matmul(d_out_s.swapaxes(1, 2), probs.astype(d_out_s.dtype))
            d_q = _matmul(d_flat.astype(k.dtype), k_rest)
            if prefix is not None:
                p_probs = jnp.exp(prefix - lse_s[..., None])
                p_d = p_probs * (_matmul_t(d_out_s, v_prefix).astype(stat) - delta_s[..., None])
                d_kt_prefix += _matmul(q_s.swapaxes(1, 2), p_d.astype(q.dtype))
                d_vt_prefix += _matmul(d_out_s.swapaxes(1, 2), p_probs.astype(d_out_s.dtype))
                d_q += _matmul(p_d.astype(k.dtype), k_prefix)
            d_rel = (None, None)
            if layout.with_bias:
                grid = d_logits
                if not layout.split:
                    grid = d_flat[..., layout.num_prefix :].reshape(*q_s.shape[:2], *layout.grid)
                d_rel = (grid.sum(3).astype(rel_h.dtype), grid.sum(2).astype(rel_w.dtype))
            return ((d_kt_prefix, d_kt), (d_vt_prefix, d_vt)), (d_q, *d_rel)

        g = layout.heads
        zeros = (
            jnp.zeros((g, h, num_split), stat),
            jnp.zeros((g, h, k.shape[1] - num_split), stat),
        )
        (d_kt, d_vt), per_step = jax.lax.scan(
            one_step, (zeros, zeros), (q_g, d_out_g, stats_g, rel_h_g, rel_w_g)
        )
        d_k = jnp.concatenate(d_kt, axis=2).astype(k.dtype)
        return d_k, jnp.concatenate(d_vt, axis=2).astype(v.dtype), per_step

    steps = lambda x: _to_steps(x, layout)  # noqa: E731
    d_kt, d_vt, (d_q, d_rel_h, d_rel_w) = jax.lax.map(
        one_group,
        (
            steps(q),
            steps(d_out),
            steps(jnp.stack([lse, delta], axis=-1)),
            *_key_parts(k, layout),
            *_key_parts(v, layout),
            steps(rel_h),
            steps(rel_w),
        ),
    )

    def unstep(x):
        return None if x is None else _from_steps(x, tq)

    def keys_last_to_first(x):  # (G/heads, heads, H, Tk) -> (G, Tk, H)
        return x.reshape(num_heads, h, -1).transpose(0, 2, 1)

    return (
        unstep(d_q),
        keys_last_to_first(d_kt),
        keys_last_to_first(d_vt),
        unstep(d_rel_h),
        unstep(d_rel_w),
    )


_flash_attention.defvjp(_flash_attention_fwd, _flash_attention_bwd)


def _chunked_attention(q, k, v, rel_h, rel_w, num_prefix, query_chunk):
    """Attention in (head, query chunk) steps, on (B, T, N, H) tensors.

    q: (B, Tq, N, H); k, v: (B, Tk, N, H); rel_h, rel_w: (B, Tq, N, kh|kw) or None.
    """
    b, tq, n, h = q.shape
    tk = k.shape[1]

    def heads_first(x):  # (B, T, N, D) -> (B*N, T, D)
        return x.transpose(0, 2, 1, 3).reshape(b * n, x.shape[1], x.shape[3])

    if rel_h is None:  # without a bias, prefix keys are like any other key
        layout = _layout(b * n, tq, tk, (1, tk), False, 0, query_chunk)
        rel = (None, None)
    else:
        grid = (rel_h.shape[-1], rel_w.shape[-1])
        layout = _layout(b * n, tq, tk, grid, True, num_prefix, query_chunk)
        rel = (heads_first(rel_h), heads_first(rel_w))
    out = _flash_attention(heads_first(q), heads_first(k), heads_first(v), *rel, layout)
    return out.reshape(b, n, tq, h).transpose(0, 2, 1, 3)


# dtypes of the flash kernel on a GPU (Triton's dot takes no float64 operands).
_FLASH_DTYPES = ("bfloat16", "float16", "float32")


def cudnn_supports(*, q_len: int, k_len: int, head_dim: int, dtype) -> bool:
    """Whether `jax.nn.dot_product_attention`'s cuDNN kernel takes these shapes in training.

    It needs float16 or bfloat16, a head dim that is a multiple of 8 and at most 128
    (256 from Hopper on, which the shapes alone do not tell), and even sequence
    lengths in training: on the mask decoder's 7 tokens it raised
    `NotImplementedError: Unsupported sequence length Q 7, KV 4096`.
    """
    return (
        jnp.dtype(dtype) in (jnp.float16, jnp.bfloat16)
        and head_dim % 8 == 0
        and head_dim <= 128
        and q_len % 2 == 0
        and k_len % 2 == 0
    )


def choose_implementation(
    requested: str, *, backend: str, q_len: int, k_len: int, head_dim: int, dtype, has_bias: bool
) -> str:
    """The kernel ("xla", "cudnn", "chunked" or "flash") for one attention call.

    "xla", "chunked" and "flash" are taken as requested. "cudnn" is taken where cuDNN
    supports the call (`cudnn_supports`, on a GPU) and is "xla" elsewhere, so that the
    mask decoder's odd token counts do not break training. "auto" picks:
      GPU: "flash" for the encoder's rel-pos attention (no (B, N, Tq, Tk) bias or
        logits in memory; "chunked" for float64), else "xla";
      TPU: "chunked" with a rel-pos bias (memory-light, as on GPU), else "xla";
      CPU: "chunked" with a rel-pos bias or more than `_CHUNK_THRESHOLD` logits per
        head (faster there than XLA's attention), else "xla".

    Args:
      requested: one of `ATTENTION_IMPLEMENTATIONS`.
      backend: `jax.default_backend()`: "cpu", "gpu" or "tpu".
      q_len, k_len: queries Tq and keys Tk (prefix keys included).
      head_dim: H.
      dtype: dtype of q, k and v.
      has_bias: whether the call has a decomposed rel-pos bias (the image encoder).
    """
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention {requested!r} is not one of {ATTENTION_IMPLEMENTATIONS}")
    if requested == "cudnn":
        supported = backend == "gpu" and cudnn_supports(
            q_len=q_len, k_len=k_len, head_dim=head_dim, dtype=dtype
        )
        return "cudnn" if supported else "xla"
    if requested != "auto":
        return requested
    if backend == "gpu":
        if not has_bias:
            return "xla"
        return "flash" if jnp.dtype(dtype).name in _FLASH_DTYPES else "chunked"
    if backend == "tpu":
        return "chunked" if has_bias else "xla"
    return "chunked" if has_bias or q_len * k_len > _CHUNK_THRESHOLD else "xla"


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float,
    rel_h: Optional[jax.Array] = None,
    rel_w: Optional[jax.Array] = None,
    num_prefix: int = 0,
    implementation: str = "auto",
    query_chunk: int = 1024,
) -> jax.Array:
    """Scaled dot-product attention with an optional decomposed positional bias.

    Args:
      q: queries (B, Tq, N, H), not yet scaled.
      k: keys (B, Tk, N, H); with `num_prefix` > 0 the first keys are prefixes.
      v: values (B, Tk, N, H).
      scale: multiplies q.k (1/sqrt(H) in SAM).
      rel_h: (B, Tq, N, kh) bias per query and key row, or None.
      rel_w: (B, Tq, N, kw) bias per query and key column; kh*kw = Tk - num_prefix.
      num_prefix: keys before the spatial grid, which get no positional bias.
      implementation: "auto", "xla", "cudnn", "chunked" or "flash" (see
        `SamConfig.attention` and `choose_implementation`).
      query_chunk: most queries per step of the chunked kernel (fewer where a step
        would have more than `_STEP_LOGITS` logits).

    Returns:
      (B, Tq, N, H) attention output.
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    implementation = choose_implementation(
        implementation,
        backend=jax.default_backend(),
        q_len=q.shape[1],
        k_len=k.shape[1],
        head_dim=q.shape[3],
        dtype=q.dtype,
        has_bias=rel_h is not None,
    )
    q = q * jnp.asarray(scale, q.dtype)
    if implementation == "chunked":
        return _chunked_attention(q, k, v, rel_h, rel_w, num_prefix, query_chunk)
    if implementation == "flash":
        return flash_attention(q, k, v, rel_h, rel_w, num_prefix=num_prefix)
    bias = None
    if rel_h is not None:
        bias = _expand_bias(
            rel_h.transpose(0, 2, 1, 3), rel_w.transpose(0, 2, 1, 3), num_prefix, q.dtype
        )  # (B, N, Tq, Tk)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, scale=1.0, implementation=None if implementation == "xla" else "cudnn"
    )
