"""SAM's two-way transformer (`segment_anything.modeling.transformer`)."""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.row_dense import RowDense
from mopeft_jax.sam import attention as attention_lib
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.layers import MLPBlock, layer_norm


class Attention(nn.Module):
    """Multi-head attention whose projections may downscale the width by `downsample_rate`."""

    num_heads: int
    downsample_rate: int = 1
    config: SamConfig = SamConfig()

    @nn.compact
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        """q (B, Tq, D), k and v (B, Tk, D) -> (B, Tq, D)."""
        dim = q.shape[-1]
        internal = dim // self.downsample_rate
        dtype = jnp.dtype(self.config.dtype)
        split = lambda x: x.reshape(*x.shape[:2], self.num_heads, -1)  # noqa: E731
        q = split(RowDense(internal, dtype=dtype, name="q_proj")(q))
        k = split(RowDense(internal, dtype=dtype, name="k_proj")(k))
        v = split(RowDense(internal, dtype=dtype, name="v_proj")(v))
        out = attention_lib.dot_product_attention(
            q,
            k,
            v,
            scale=q.shape[-1] ** -0.5,
            implementation=self.config.attention,
            query_chunk=self.config.attention_query_chunk,
        )
        out = out.reshape(*out.shape[:2], internal)
        return RowDense(dim, dtype=dtype, name="out_proj")(out)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token, each followed by a LayerNorm."""

    config: SamConfig
    skip_first_layer_pe: bool = False

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe) -> Tuple[jax.Array, jax.Array]:
        """queries, query_pe (B, Tq, D); keys, key_pe (B, Tk, D) -> updated (queries, keys)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        heads, rate = cfg.decoder_num_heads, cfg.attention_downsample_rate
        norm = lambda name: layer_norm(1e-5, dtype, name)  # noqa: E731

        self_attn = Attention(heads, config=cfg, name="self_attn")
        if self.skip_first_layer_pe:
            queries = self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self_attn(q, q, queries)
        queries = norm("norm1")(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + Attention(heads, rate, cfg, name="cross_attn_token_to_image")(
            q, k, keys
        )
        queries = norm("norm2")(queries)

        queries = queries + MLPBlock(cfg.decoder_mlp_dim, nn.relu, dtype, name="mlp")(queries)
        queries = norm("norm3")(queries)

        q, k = queries + query_pe, keys + key_pe
        keys = keys + Attention(heads, rate, cfg, name="cross_attn_image_to_token")(k, q, queries)
        keys = norm("norm4")(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Prompt tokens and image tokens attending to each other."""

    config: SamConfig

    @nn.compact
    def __call__(
        self, image_embedding: jax.Array, image_pe: jax.Array, point_embedding: jax.Array
    ) -> Tuple[jax.Array, jax.Array]:
        """image_embedding, image_pe (B, h, w, D); point_embedding (B, T, D).

        Returns the processed tokens (B, T, D) and image tokens (B, h*w, D).
        """
        cfg = self.config
        b, h, w, d = image_embedding.shape
        keys = image_embedding.reshape(b, h * w, d)
        key_pe = image_pe.reshape(image_pe.shape[0], h * w, d)
        queries = point_embedding
        for i in range(cfg.decoder_depth):
            queries, keys = TwoWayAttentionBlock(
                cfg, skip_first_layer_pe=i == 0, name=f"layers_{i}"
            )(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        attn = Attention(
            cfg.decoder_num_heads,
            cfg.attention_downsample_rate,
            cfg,
            name="final_attn_token_to_image",
        )
        queries = queries + attn(q, k, keys)
        queries = layer_norm(1e-5, jnp.dtype(cfg.dtype), "norm_final_attn")(queries)
        return queries, keys
