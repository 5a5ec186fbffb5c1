"""Flash attention in Pallas with SAM's decomposed relative-position bias.

A query at grid position (i, j) attending to a key at (u, v) gets the logit
`q.k + rel_h[q, u] + rel_w[q, v]`; optional prefix keys (prefix tuning) come before
the grid's keys and get no bias. The kernels walk over blocks of keys with an online
softmax and store only the output and each query's logsumexp: no (B, N, Tq, Tk)
logits or probabilities exist in the forward or the backward pass. The backward pass
recomputes each block's logits, in one kernel that loops over keys per query block
(dq, d_rel_h, d_rel_w) and one that loops over queries per key block (dk, dv).

A block of grid keys is a few whole rows of the key grid, so its bias is formed in
the kernel from the per-query tables: `rel_h[:, rows]` broadcast over the columns
plus `rel_w`. The wrapper pads every row to a power of two (the Triton backend's
block shapes must be powers of two); padded keys get -inf logits, padded queries and
head channels are dropped.

The kernels target the Pallas Triton backend (NVIDIA GPUs); elsewhere they run in
interpret mode, which is exact but slow. float32 inputs are multiplied at float32
precision (not TF32); bfloat16 and float16 inputs accumulate in float32.
"""

from __future__ import annotations

import functools
from typing import Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

# The Triton backend needs power-of-two blocks and dot operands of at least 16 by 16.
_MIN_BLOCK = 16
# Queries and keys per block. On ViT-B's shapes Triton 3.6 compiles every kernel for
# sm_90 with at most 66 KB (bfloat16) or 99 KB (float32) of shared memory per program,
# and the bfloat16 ones for sm_80 with at most 50 KB. Not yet timed on a GPU.
_BLOCK_Q = 64
_BLOCK_K = 64


class _KeyBlocks(NamedTuple):
    """Static layout of one kind of key in its padded (B, num_blocks * size, N, H) array.

    Keys sit in rows of `row_len` slots, `rows` rows to a block; only the first `cols`
    slots of a row and the first `limit` slots overall hold keys. Grid keys keep the
    rows of the key grid (`cols` = kw), so a block's bias needs `rows` entries of
    rel_h and all of rel_w. Plain keys (prefixes, or every key of an attention without
    bias) are one block-long row after another.
    """

    row_len: int
    cols: int
    rows: int
    limit: int
    num_blocks: int
    bias: bool

    @property
    def size(self) -> int:
        """Keys per block."""
        return self.rows * self.row_len


class _Layout(NamedTuple):
    """Static shape of a flash-attention call on padded (B, T, N, H) arrays."""

    block_q: int
    num_q_blocks: int
    head_dim: int  # padded to a power of two
    plain: Optional[_KeyBlocks]
    grid: Optional[_KeyBlocks]
    interpret: bool

    @property
    def key_kinds(self):
        """(name, _KeyBlocks) of the kinds of key present, plain keys first."""
        return tuple((n, k) for n, k in (("plain", self.plain), ("grid", self.grid)) if k)


def _pow2(x: int) -> int:
    """The smallest power of two >= x."""
    return 1 << max(0, x - 1).bit_length()


def _plain_keys(count: int) -> _KeyBlocks:
    """Blocks of `count` keys without bias."""
    size = min(_BLOCK_K, max(_MIN_BLOCK, _pow2(count)))
    return _KeyBlocks(size, size, 1, count, -(-count // size), False)


def _grid_keys(kh: int, kw: int) -> _KeyBlocks:
    """Blocks of whole rows of a (kh, kw) key grid with decomposed bias."""
    row_len = _pow2(kw)
    rows = min(max(1, _BLOCK_K // row_len), _pow2(kh))
    rows = max(rows, _MIN_BLOCK // row_len)
    return _KeyBlocks(row_len, kw, rows, kh * row_len, -(-kh // rows), True)


def _make_layout(tq, head_dim, num_plain, grid, interpret) -> _Layout:
    """_Layout of `tq` queries against `num_plain` plain keys and a (kh, kw) grid or None."""
    block_q = min(_BLOCK_Q, max(_MIN_BLOCK, _pow2(tq)))
    return _Layout(
        block_q=block_q,
        num_q_blocks=-(-tq // block_q),
        head_dim=max(_MIN_BLOCK, _pow2(head_dim)),
        plain=_plain_keys(num_plain) if num_plain else None,
        grid=_grid_keys(*grid) if grid else None,
        interpret=interpret,
    )


# ----------------------------------------------------------------------------- kernels


def _dot(a, b, contract):
    """float32 a @ b over dims `contract` ((1, 0) is a @ b, (1, 1) a @ b.T, (0, 0) a.T @ b).

    float32 operands multiply at full precision (the Triton backend's default is TF32).
    """
    precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return lax.dot_general(
        a,
        b,
        (((contract[0],), (contract[1],)), ((), ())),
        precision=precision,
        preferred_element_type=jnp.float32,
    )


def _key_mask(keys: _KeyBlocks, block):
    """(size,) True where slot `block * size + i` holds a key; None if all do."""
    if keys.cols == keys.row_len and keys.limit == keys.num_blocks * keys.size:
        return None
    slot = block * keys.size + lax.broadcasted_iota(jnp.int32, (keys.size,), 0)
    valid = slot < keys.limit
    if keys.cols < keys.row_len:
        valid &= lax.rem(slot, keys.row_len) < keys.cols
    return valid


def _logits(q, k, keys: _KeyBlocks, block, rel_h_rows, rel_w):
    """float32 logits (bq, size) of queries q (bq, H) against key block k (size, H).

    rel_h_rows: (bq, rows) bias of the block's key rows, rel_w: (bq, row_len) float32
    bias of the columns; both None for plain keys.
    """
    s = _dot(q, k, (1, 1))
    if keys.bias:
        bias = rel_h_rows.astype(jnp.float32)[:, :, None] + rel_w[:, None, :]
        s += bias.reshape(s.shape)
    mask = _key_mask(keys, block)
    return s if mask is None else jnp.where(mask[None, :], s, -jnp.inf)


def _rel_h_rows(rel_h_ref, keys: _KeyBlocks, block, queries=slice(None)):
    """The (bq, rows) columns of rel_h for key block `block`, or None for plain keys."""
    if not keys.bias:
        return None
    return rel_h_ref[queries, pl.ds(block * keys.rows, keys.rows)]


def _forward_kernel(ins, outs, *, layout: _Layout):
    """One (batch, head, query block): output (bq, H) and logsumexp (bq,)."""
    q = ins["q"][...]
    rel_w = ins["rel_w"][...].astype(jnp.float32) if layout.grid else None
    carry = (
        jnp.zeros((layout.block_q, layout.head_dim), jnp.float32),
        jnp.full((layout.block_q,), -jnp.inf, jnp.float32),  # running max
        jnp.zeros((layout.block_q,), jnp.float32),  # running sum of exp
    )
    for name, keys in layout.key_kinds:
        k_ref, v_ref = ins["k_" + name], ins["v_" + name]

        def body(j, carry, keys=keys, k_ref=k_ref, v_ref=v_ref):
            acc, m_prev, total = carry
            span = pl.ds(j * keys.size, keys.size)
            rel_h = _rel_h_rows(ins.get("rel_h"), keys, j)
            s = _logits(q, k_ref[span, :], keys, j, rel_h, rel_w)
            m = jnp.maximum(m_prev, jnp.max(s, axis=1))
            correction = jnp.exp(m_prev - m)
            p = jnp.exp(s - m[:, None])
            v = v_ref[span, :]
            acc = acc * correction[:, None] + _dot(p.astype(v.dtype), v, (1, 0))
            return acc, m, total * correction + jnp.sum(p, axis=1)

        carry = lax.fori_loop(0, keys.num_blocks, body, carry)
    acc, m, total = carry
    outs["out"][...] = (acc / total[:, None]).astype(outs["out"].dtype)
    outs["lse"][...] = m + jnp.log(total)


def _dq_kernel(ins, outs, *, layout: _Layout):
    """One (batch, head, query block): dq (bq, H) and, with a grid, d_rel_h, d_rel_w."""
    q, d_out = ins["q"][...], ins["d_out"][...]
    lse, delta = ins["lse"][...], ins["delta"][...]
    rel_w = ins["rel_w"][...].astype(jnp.float32) if layout.grid else None
    d_q = jnp.zeros((layout.block_q, layout.head_dim), jnp.float32)
    for name, keys in layout.key_kinds:
        k_ref, v_ref = ins["k_" + name], ins["v_" + name]

        def body(j, carry, keys=keys, k_ref=k_ref, v_ref=v_ref):
            d_q, d_rel_w = carry
            span = pl.ds(j * keys.size, keys.size)
            k, v = k_ref[span, :], v_ref[span, :]
            rel_h = _rel_h_rows(ins.get("rel_h"), keys, j)
            p = jnp.exp(_logits(q, k, keys, j, rel_h, rel_w) - lse[:, None])
            d_s = p * (_dot(d_out, v, (1, 1)) - delta[:, None])  # d logits
            d_q += _dot(d_s.astype(k.dtype), k, (1, 0))
            if keys.bias:
                # Each block's rows of d_rel_h are complete once it is done: store them.
                d_s = d_s.reshape(layout.block_q, keys.rows, keys.row_len)
                d_rel_h = outs["d_rel_h"]
                d_rel_h[:, pl.ds(j * keys.rows, keys.rows)] = d_s.sum(2).astype(d_rel_h.dtype)
                d_rel_w += d_s.sum(1)
            return d_q, d_rel_w

        d_rel_w = jnp.zeros((layout.block_q, keys.row_len), jnp.float32) if keys.bias else None
        d_q, d_rel_w = lax.fori_loop(0, keys.num_blocks, body, (d_q, d_rel_w))
        if keys.bias:
            outs["d_rel_w"][...] = d_rel_w.astype(outs["d_rel_w"].dtype)
    outs["d_q"][...] = d_q.astype(outs["d_q"].dtype)


def _dkv_kernel(ins, outs, *, layout: _Layout, keys: _KeyBlocks):
    """One (batch, head, key block) of one kind of key: dk and dv (size, H)."""
    j = pl.program_id(2)
    k, v = ins["k"][...], ins["v"][...]
    rel_h_ref = ins.get("rel_h")

    def body(i, carry):
        d_k, d_v = carry
        span = pl.ds(i * layout.block_q, layout.block_q)
        q, d_out = ins["q"][span, :], ins["d_out"][span, :]
        rel_h = _rel_h_rows(rel_h_ref, keys, j, span)
        rel_w = ins["rel_w"][span, :].astype(jnp.float32) if keys.bias else None
        p = jnp.exp(_logits(q, k, keys, j, rel_h, rel_w) - ins["lse"][span][:, None])
        d_v += _dot(p.astype(d_out.dtype), d_out, (0, 0))
        d_s = p * (_dot(d_out, v, (1, 1)) - ins["delta"][span][:, None])
        return d_k + _dot(d_s.astype(q.dtype), q, (0, 0)), d_v

    zeros = jnp.zeros((keys.size, layout.head_dim), jnp.float32)
    d_k, d_v = lax.fori_loop(0, layout.num_q_blocks, body, (zeros, zeros))
    outs["d_k"][...] = d_k.astype(outs["d_k"].dtype)
    outs["d_v"][...] = d_v.astype(outs["d_v"].dtype)


# ------------------------------------------------------------------------ pallas calls
# Every call runs over a (batch, head, block) grid of (B, T, N, D) arrays; the specs
# below give one program a block of tokens or all tokens of its (batch, head).


def _block_spec(block, width):
    """Block `i` of `block` tokens of a (B, T, N, width) array."""
    return pl.BlockSpec((pl.Squeezed(), block, pl.Squeezed(), width), lambda b, n, i: (b, i, n, 0))


def _whole_spec(x):
    """All tokens of one (batch, head) of a (B, T, N, D) array."""
    return pl.BlockSpec(
        (pl.Squeezed(), x.shape[1], pl.Squeezed(), x.shape[3]), lambda b, n, i: (b, 0, n, 0)
    )


def _stats_spec(block, whole=False):
    """Block `i` of `block` queries of a (B, N, T) array of per-query statistics, or
    with `whole` all T = `block` of them."""
    index = (lambda b, n, i: (b, n, 0)) if whole else (lambda b, n, i: (b, n, i))
    return pl.BlockSpec((pl.Squeezed(), pl.Squeezed(), block), index)


def _pallas(kernel, name, grid, in_specs, out_specs, out_shape, layout):
    """`kernel(ins, outs)` on dicts of refs, over `grid`, as a function of a dict of arrays."""
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=(in_specs,),
        out_specs=(out_specs,),
        out_shape=(out_shape,),
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=layout.interpret,
        name=name,
    )


def _query_specs(arrays, layout, names):
    """Specs giving each program its query block of the arrays `names` laid out per query."""
    return {n: _block_spec(layout.block_q, arrays[n].shape[3]) for n in names if n in arrays}


def _forward(layout: _Layout, arrays: Dict[str, jax.Array]):
    """Output (B, Tq, N, H) and float32 logsumexp (B, N, Tq) of padded arrays."""
    q = arrays["q"]
    b, tq, n, _ = q.shape
    specs = _query_specs(arrays, layout, ("q", "rel_h", "rel_w"))
    specs.update(
        {name: _whole_spec(arrays[name]) for name in arrays if name.startswith(("k_", "v_"))}
    )
    out_shape = {
        "out": jax.ShapeDtypeStruct(q.shape, q.dtype),
        "lse": jax.ShapeDtypeStruct((b, n, tq), jnp.float32),
    }
    out_specs = {
        "out": _block_spec(layout.block_q, layout.head_dim),
        "lse": _stats_spec(layout.block_q),
    }
    (result,) = _pallas(
        functools.partial(_forward_kernel, layout=layout),
        "sam_flash_forward",
        (b, n, layout.num_q_blocks),
        specs,
        out_specs,
        out_shape,
        layout,
    )(arrays)
    return result["out"], result["lse"]


def _backward_dq(layout, arrays, d_out, stats):
    """dq and, with a grid, d_rel_h and d_rel_w: a dict of padded arrays."""
    q = arrays["q"]
    b, _, n, _ = q.shape
    ins = {**arrays, "d_out": d_out, **stats}
    specs = _query_specs(ins, layout, ("q", "d_out", "rel_h", "rel_w"))
    specs.update({name: _whole_spec(ins[name]) for name in arrays if name.startswith(("k_", "v_"))})
    specs.update({name: _stats_spec(layout.block_q) for name in stats})
    out_shape = {"d_q": jax.ShapeDtypeStruct(q.shape, q.dtype)}
    if layout.grid:
        out_shape["d_rel_h"] = jax.ShapeDtypeStruct(arrays["rel_h"].shape, arrays["rel_h"].dtype)
        out_shape["d_rel_w"] = jax.ShapeDtypeStruct(arrays["rel_w"].shape, arrays["rel_w"].dtype)
    out_specs = _query_specs(out_shape, layout, ("d_q", "d_rel_h", "d_rel_w"))
    (result,) = _pallas(
        functools.partial(_dq_kernel, layout=layout),
        "sam_flash_backward_dq",
        (b, n, layout.num_q_blocks),
        specs,
        out_specs,
        out_shape,
        layout,
    )(ins)
    return result


def _backward_dkv(layout, arrays, d_out, stats, name, keys):
    """dk and dv of the keys of kind `name` (padded arrays)."""
    k, v = arrays["k_" + name], arrays["v_" + name]
    b, _, n, _ = k.shape
    ins = {"q": arrays["q"], "d_out": d_out, "k": k, "v": v, **stats}
    if keys.bias:
        ins.update(rel_h=arrays["rel_h"], rel_w=arrays["rel_w"])
    specs = {key: _whole_spec(x) for key, x in ins.items() if x.ndim == 4}
    specs.update(
        k=_block_spec(keys.size, layout.head_dim), v=_block_spec(keys.size, layout.head_dim)
    )
    specs.update({key: _stats_spec(arrays["q"].shape[1], whole=True) for key in stats})
    out_shape = {
        "d_k": jax.ShapeDtypeStruct(k.shape, k.dtype),
        "d_v": jax.ShapeDtypeStruct(v.shape, v.dtype),
    }
    (result,) = _pallas(
        functools.partial(_dkv_kernel, layout=layout, keys=keys),
        f"sam_flash_backward_dkv_{name}",
        (b, n, keys.num_blocks),
        specs,
        {key: _block_spec(keys.size, layout.head_dim) for key in out_shape},
        out_shape,
        layout,
    )(ins)
    return result["d_k"], result["d_v"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(layout: _Layout, arrays: Dict[str, jax.Array]) -> jax.Array:
    """Flash attention of padded arrays (see `flash_attention`): the padded output."""
    return _forward(layout, arrays)[0]


def _attention_fwd(layout, arrays):
    out, lse = _forward(layout, arrays)
    return out, (arrays, out, lse)


def _attention_bwd(layout, residuals, d_out):
    arrays, out, lse = residuals
    # rowsum(dO * O) = rowsum(P * dP), the per-query term of the softmax backward.
    delta = jnp.einsum("btnh,btnh->bnt", d_out.astype(jnp.float32), out.astype(jnp.float32))
    stats = {"lse": lse, "delta": delta}
    result = _backward_dq(layout, arrays, d_out, stats)
    grads = {"q": result["d_q"]}
    if layout.grid:
        grads.update(rel_h=result["d_rel_h"], rel_w=result["d_rel_w"])
    for name, keys in layout.key_kinds:
        grads["k_" + name], grads["v_" + name] = _backward_dkv(
            layout, arrays, d_out, stats, name, keys
        )
    return ({name: grads[name] for name in arrays},)


_attention.defvjp(_attention_fwd, _attention_bwd)


# ----------------------------------------------------------------------------- wrapper


def _pad(x, length, width):
    """Zero-pad a (B, T, N, D) array to (B, length, N, width)."""
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, width - x.shape[3])))


def _pad_grid(x, kh, kw, keys: _KeyBlocks, width):
    """(B, kh*kw, N, D) grid keys -> (B, num_blocks*size, N, width), rows padded to row_len."""
    b, _, n, d = x.shape
    x = x.reshape(b, kh, kw, n, d)
    rows = keys.num_blocks * keys.rows
    x = jnp.pad(x, ((0, 0), (0, rows - kh), (0, keys.row_len - kw), (0, 0), (0, width - d)))
    return x.reshape(b, rows * keys.row_len, n, width)


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    rel_h: Optional[jax.Array] = None,
    rel_w: Optional[jax.Array] = None,
    *,
    num_prefix: int = 0,
    interpret: Optional[bool] = None,
) -> jax.Array:
    """softmax(q.k + bias) v with SAM's decomposed bias, in Pallas kernels.

    Args:
      q: queries (B, Tq, N, H), already scaled.
      k: keys (B, Tk, N, H); with a bias the first `num_prefix` are prefix keys.
      v: values (B, Tk, N, H).
      rel_h: (B, Tq, N, kh) bias per query and key row, or None (no bias).
      rel_w: (B, Tq, N, kw) bias per query and key column; kh*kw = Tk - num_prefix.
      num_prefix: keys before the grid, which get no bias.
      interpret: run the kernels in Pallas' interpret mode; default: unless the
        default backend is a GPU.

    Returns:
      (B, Tq, N, H) attention output, differentiable w.r.t. q, k, v, rel_h and rel_w.
    """
    _, tq, _, h = q.shape
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    grid = None if rel_h is None else (rel_h.shape[-1], rel_w.shape[-1])
    num_plain = k.shape[1] if grid is None else num_prefix
    if grid and grid[0] * grid[1] != k.shape[1] - num_prefix:
        raise ValueError(
            f"{k.shape[1]} keys are not {num_prefix} prefix keys and a {grid[0]}x{grid[1]} grid."
        )
    layout = _make_layout(tq, h, num_plain, grid, interpret)
    width = layout.head_dim
    tq_pad = layout.num_q_blocks * layout.block_q
    arrays = {"q": _pad(q, tq_pad, width)}
    if layout.plain:
        plain_length = layout.plain.num_blocks * layout.plain.size
        arrays["k_plain"] = _pad(k[:, :num_plain], plain_length, width)
        arrays["v_plain"] = _pad(v[:, :num_plain], plain_length, width)
    if layout.grid:
        arrays["k_grid"] = _pad_grid(k[:, num_plain:], *grid, layout.grid, width)
        arrays["v_grid"] = _pad_grid(v[:, num_plain:], *grid, layout.grid, width)
        rows = layout.grid.num_blocks * layout.grid.rows
        arrays["rel_h"] = _pad(rel_h, tq_pad, rows)
        arrays["rel_w"] = _pad(rel_w, tq_pad, layout.grid.row_len)
    return _attention(layout, arrays)[:, :tq, :, :h]
