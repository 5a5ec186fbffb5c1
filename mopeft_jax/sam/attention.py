"""Multi-head attention kernels shared by the image encoder and the mask decoder.

All tensors use the layout of `jax.nn.dot_product_attention`: (B, T, N, H) for
batch, tokens, heads and head width.

The image encoder adds SAM's decomposed relative-position bias: a query at grid
position (i, j) attending to a key at (u, v) gets `rel_h[.., u] + rel_w[.., v]`.
Materialising that bias for a global block of ViT-B is a (B, 12, 4096, 4096)
tensor, and on a CPU a plain batched attention over it is memory-bound. The
chunked kernel therefore walks over (head, query chunk) pairs, forming the bias
of one chunk at a time; on GPU/TPU the full bias goes to XLA's fused attention.
Optional prefix keys/values (prefix tuning) come before the spatial keys and get
no positional bias.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# Above this many logits per (batch, head), "auto" chunks queries on the CPU.
_CHUNK_THRESHOLD = 512 * 512


def _softmax_attend(logits, values):
    """softmax(logits) @ values with float32 softmax statistics.

    logits: (..., Tq, Tk); values: (..., Tk, H) -> (..., Tq, H).
    """
    probs = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    probs = probs.astype(values.dtype)
    return probs @ values


def _expand_bias(rel_h, rel_w, num_prefix, dtype):
    """Decomposed bias (..., Tq, kh), (..., Tq, kw) -> (..., Tq, num_prefix + kh*kw)."""
    bias = rel_h[..., :, None] + rel_w[..., None, :]
    bias = bias.reshape(*bias.shape[:-2], -1)
    if num_prefix:
        bias = jnp.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(num_prefix, 0)])
    return bias.astype(dtype)


def _chunked_attention(q, k, v, rel_h, rel_w, num_prefix, query_chunk):
    """Attention one (batch*head, query chunk) at a time.

    q: (B, Tq, N, H); k, v: (B, Tk, N, H); rel_h, rel_w: (B, Tq, N, kh|kw) or None.
    """
    b, tq, n, h = q.shape
    chunk = min(query_chunk, tq)
    num_chunks = -(-tq // chunk)
    pad = num_chunks * chunk - tq

    def heads_first(x):  # (B, T, N, H) -> (B*N, T, H)
        return x.transpose(0, 2, 1, 3).reshape(b * n, x.shape[1], x.shape[3])

    def chunked(x):  # (B*N, Tq, D) -> (B*N*num_chunks, chunk, D); index = bn * num_chunks + c
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
        return x.reshape(b * n * num_chunks, chunk, x.shape[-1])

    q_chunks = chunked(heads_first(q))
    k_heads, v_heads = heads_first(k), heads_first(v)
    with_bias = rel_h is not None
    xs = (jnp.arange(b * n * num_chunks), q_chunks)
    if with_bias:
        xs += (chunked(heads_first(rel_h)), chunked(heads_first(rel_w)))

    def one_chunk(args):
        index, q_c = args[:2]
        head = index // num_chunks
        logits = q_c @ k_heads[head].T  # (chunk, Tk)
        if with_bias:
            logits += _expand_bias(args[2], args[3], num_prefix, logits.dtype)
        return _softmax_attend(logits, v_heads[head])

    out = jax.lax.map(one_chunk, xs)  # (B*N*num_chunks, chunk, H)
    out = out.reshape(b, n, num_chunks * chunk, h)[:, :, :tq]
    return out.transpose(0, 2, 1, 3)


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
      implementation: "auto", "xla", "cudnn" or "chunked" (see `SamConfig.attention`).
      query_chunk: queries per step of the chunked kernel.

    Returns:
      (B, Tq, N, H) attention output.
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    if implementation == "auto":
        on_cpu = jax.default_backend() == "cpu"
        implementation = (
            "chunked" if on_cpu and q.shape[1] * k.shape[1] > _CHUNK_THRESHOLD else "xla"
        )
    q = q * jnp.asarray(scale, q.dtype)
    if implementation == "chunked":
        return _chunked_attention(q, k, v, rel_h, rel_w, num_prefix, query_chunk)
    bias = None
    if rel_h is not None:
        bias = _expand_bias(
            rel_h.transpose(0, 2, 1, 3), rel_w.transpose(0, 2, 1, 3), num_prefix, q.dtype
        )  # (B, N, Tq, Tk)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, scale=1.0, implementation=None if implementation == "xla" else "cudnn"
    )
