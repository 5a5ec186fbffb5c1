"""The attention kernels agree with a direct computation of the formula."""

import numpy as np
import pytest

from mopeft_jax.sam.attention import dot_product_attention


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


@pytest.mark.parametrize(
    "implementation, chunk", [("xla", 1024), ("chunked", 7), ("chunked", 64), ("auto", 16)]
)
@pytest.mark.parametrize("num_prefix", [0, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernels_match_reference(implementation, chunk, num_prefix, with_bias):
    rng = np.random.RandomState(0)
    b, n, h, kh, kw = 2, 3, 8, 5, 6
    tq = kh * kw
    q = rng.randn(b, tq, n, h).astype(np.float32)
    k = rng.randn(b, num_prefix + tq, n, h).astype(np.float32)
    v = rng.randn(b, num_prefix + tq, n, h).astype(np.float32)
    rel_h = rng.randn(b, tq, n, kh).astype(np.float32) if with_bias else None
    rel_w = rng.randn(b, tq, n, kw).astype(np.float32) if with_bias else None
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
