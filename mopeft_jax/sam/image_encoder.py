"""SAM's ViT image encoder (`segment_anything.modeling.image_encoder`), in NHWC.

Every encoder block can host the PEFT layers of `config.peft` (see `mopeft_jax.peft`);
without them the parameter tree and the outputs are exactly SAM's.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.peft.config import PeftConfig
from mopeft_jax.peft.gates import Gate, Router, block_gate_names
from mopeft_jax.peft.layers import Bottleneck, LoRA, PrefixEncoder
from mopeft_jax.peft.names import (
    ADAPTER,
    INPUT_EXPERT,
    LORA_TARGETS,
    PREFIX,
    PREFIX_KV,
    ROUTER,
    gate_name,
    lora_name,
)
from mopeft_jax.row_dense import RowDense
from mopeft_jax.sam import attention as attention_lib
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.layers import MLPBlock, layer_norm, layer_norm_2d


def window_partition(x: jax.Array, window: int) -> Tuple[jax.Array, Tuple[int, int]]:
    """(B, H, W, C) -> (B * nh * nw, window, window, C), zero-padding H and W up to windows."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: jax.Array, window: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> jax.Array:
    """Inverse of `window_partition`: (B * nh * nw, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    c = windows.shape[-1]
    x = windows.reshape(-1, hp // window, wp // window, window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
    return x[:, : hw[0], : hw[1]]


def relative_positions(q_size: int, k_size: int, table: jax.Array) -> jax.Array:
    """Rel-pos embeddings for every (query, key) offset along one axis.

    table: (L, H), linearly resized to 2*max(q_size, k_size)-1 rows if L differs.
    Returns (q_size, k_size, H).
    """
    table = jnp.asarray(table)
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = jax.image.resize(table, (length, table.shape[1]), "linear", antialias=False)
    q_coords = jnp.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = jnp.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    index = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[index.astype(jnp.int32)]


class Attention(nn.Module):
    """Multi-head self-attention over a token grid with decomposed relative positions."""

    num_heads: int
    input_size: Tuple[int, int]  # grid the rel-pos tables are sized for
    config: SamConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        prefix: Optional[Tuple[jax.Array, jax.Array]] = None,
        qv_delta: Optional[Tuple[jax.Array, jax.Array]] = None,
    ) -> jax.Array:
        """Self-attention of a (B, H, W, C) grid -> (B, H, W, C).

        Args:
          x: tokens (B, H, W, C).
          prefix: optional (keys, values), each (B, L, C), attended before the grid's keys.
          qv_delta: optional updates (B, H, W, C) of the query and value projections (LoRA);
            added after the fused qkv is split, so the key slice costs nothing.
        """
        b, h, w, c = x.shape
        head_dim = c // self.num_heads
        dtype = jnp.dtype(self.config.dtype)
        qkv = RowDense(3 * c, dtype=dtype, name="qkv")(x)
        # A split's gradient is one concatenation; three slices' would be padded and summed.
        q, k, v = (
            t.reshape(b, h * w, self.num_heads, head_dim) for t in jnp.split(qkv, 3, axis=-1)
        )  # (B, T, N, hd)
        if qv_delta is not None:
            q_delta, v_delta = (d.reshape(q.shape).astype(q.dtype) for d in qv_delta)
            q, v = q + q_delta, v + v_delta

        table_shape = lambda n: (2 * n - 1, head_dim)  # noqa: E731
        zeros = nn.initializers.zeros
        rel_pos_h = self.param("rel_pos_h", zeros, table_shape(self.input_size[0])).astype(dtype)
        rel_pos_w = self.param("rel_pos_w", zeros, table_shape(self.input_size[1])).astype(dtype)
        q_grid = q.reshape(b, h, w, self.num_heads, head_dim)
        rel_h = jnp.einsum("bhwnc,hkc->bhwnk", q_grid, relative_positions(h, h, rel_pos_h))
        rel_w = jnp.einsum("bhwnc,wkc->bhwnk", q_grid, relative_positions(w, w, rel_pos_w))
        rel_h = rel_h.reshape(b, h * w, self.num_heads, h)
        rel_w = rel_w.reshape(b, h * w, self.num_heads, w)

        num_prefix = 0
        if prefix is not None:
            prefix_k, prefix_v = (
                p.astype(dtype).reshape(b, -1, self.num_heads, head_dim) for p in prefix
            )
            num_prefix = prefix_k.shape[1]
            k = jnp.concatenate([prefix_k, k], axis=1)
            v = jnp.concatenate([prefix_v, v], axis=1)

        out = attention_lib.dot_product_attention(
            q,
            k,
            v,
            scale=head_dim**-0.5,
            rel_h=rel_h,
            rel_w=rel_w,
            num_prefix=num_prefix,
            implementation=self.config.attention,
            query_chunk=self.config.attention_query_chunk,
        )
        out = out.reshape(b, h, w, c)
        return RowDense(c, dtype=dtype, name="proj")(out)


class Block(nn.Module):
    """Pre-LN ViT block; windowed attention unless `window_size` is 0.

    Hosts the PEFT layers of `config.peft`: LoRA on the q and v slices of qkv, prefix
    keys/values, and a sequential adapter on the output, each behind its gate when
    the config says gated. Gate values are sown into the "gates" collection.
    """

    config: SamConfig
    window_size: int

    @nn.compact
    def __call__(self, x: jax.Array, prefix: Optional[jax.Array] = None) -> jax.Array:
        """(B, H, W, C) -> (B, H, W, C); `prefix` (2, L, C) are this block's prefix keys/values."""
        cfg = self.config
        peft = cfg.peft if cfg.peft is not None else PeftConfig()
        dtype = jnp.dtype(cfg.dtype)
        b, h, w, c = x.shape
        grid = (cfg.embedding_size, cfg.embedding_size)
        attn_input_size = grid if self.window_size == 0 else (self.window_size, self.window_size)

        shortcut = x
        x = layer_norm(1e-6, dtype, "norm1")(x)
        gate = _Gates(self, peft, x)

        qv_delta = None
        if peft.lora:
            qv_delta = tuple(
                LoRA(peft.lora_rank, c, dtype, name=lora_name(target))(x)
                * _scale(gate(lora_name(target), x), peft.lora_alpha / peft.lora_rank)
                for target in LORA_TARGETS
            )
        if peft.prefix:
            if prefix is None:
                raise ValueError(
                    "A block with prefix tuning needs its prefix keys/values (2, L, C)."
                )
            names = PREFIX_KV if peft.separate_prefix_gates else (PREFIX,) * 2
            gates = [gate(name, x) for name in names]
            prefix = tuple(
                jnp.broadcast_to(p, (b, *p.shape)) * (1.0 if g is None else g[:, None, None])
                for p, g in zip(prefix, gates)
            )

        attn = Attention(cfg.encoder_num_heads, attn_input_size, cfg, name="attn")
        if self.window_size > 0:
            x, padded = window_partition(x, self.window_size)
            if qv_delta is not None:
                qv_delta = tuple(window_partition(d, self.window_size)[0] for d in qv_delta)
            if prefix is not None:  # every window of an image attends to its prefixes
                prefix = tuple(jnp.repeat(p, x.shape[0] // b, axis=0) for p in prefix)
            x = attn(x, prefix, qv_delta)
            x = window_unpartition(x, self.window_size, padded, (h, w))
        else:
            x = attn(x, prefix, qv_delta)
        x = shortcut + x
        x = x + MLPBlock(int(c * cfg.mlp_ratio), dtype=dtype, name="mlp")(
            layer_norm(1e-6, dtype, "norm2")(x)
        )
        if peft.adapter:
            width = max(c // peft.adapter_reduction, 1)
            zero_init = peft.adapter_init == "zero"
            update = Bottleneck(width, "relu", zero_init, dtype, name=ADAPTER)(x)
            x = x + update * _scale(gate(ADAPTER, x), 1.0)
        return x


def _scale(gate_value: Optional[jax.Array], ungated: float):
    """A gate (B,) as a (B, 1, 1, 1) multiplier, or the constant of an ungated update."""
    return ungated if gate_value is None else gate_value[:, None, None, None]


class _Gates:
    """Gate values of one block, created on first use inside its `nn.compact` call.

    Sigmoid gates each read the input of their own submodule; the softmax router
    reads the normalised block input once and weighs all gated submodules.
    """

    def __init__(self, module: nn.Module, peft: PeftConfig, block_input: jax.Array):
        self.module, self.peft = module, peft
        self.values = {}
        names = block_gate_names(peft)
        if names and peft.gate_type == "softmax":
            weights = Router(names, name=ROUTER, parent=module)(block_input)
            self.values = {name: weights[:, i] for i, name in enumerate(names)}

    def __call__(self, name: str, inputs: jax.Array) -> Optional[jax.Array]:
        """The gate (B,) of submodule `name`, or None if ungated."""
        if not self.peft.gated:
            return None
        if name not in self.values:
            self.values[name] = Gate(name=gate_name(name), parent=self.module)(inputs)
        return self.values[name]


class ImageEncoderViT(nn.Module):
    """Patch embedding, ViT blocks and neck: (B, S, S, 3) -> (B, S/p, S/p, prompt_embed_dim)."""

    config: SamConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        expected = (cfg.image_size, cfg.image_size, 3)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"encode_image expects images of shape (B, {cfg.image_size}, {cfg.image_size}, 3), "
                f"normalised and padded (see mopeft_jax.sam.transforms.preprocess); got "
                f"{tuple(images.shape)}."
            )
        p = cfg.patch_size
        x = PatchEmbed(cfg.encoder_embed_dim, p, dtype, name="patch_embed")(images.astype(dtype))
        grid = cfg.embedding_size
        pos_embed = self.param(
            "pos_embed", nn.initializers.zeros, (1, grid, grid, cfg.encoder_embed_dim)
        )
        x = x + pos_embed.astype(dtype)

        peft = cfg.peft if cfg.peft is not None else PeftConfig()
        if peft.input_expert:
            expert = Bottleneck(peft.input_expert_rank, "gelu", True, dtype, name=INPUT_EXPERT)
            gate = Gate(name=gate_name(INPUT_EXPERT))(x) if peft.gated else None
            x = x + expert(x) * _scale(gate, 1.0)
        prefixes = None
        if peft.prefix:
            prefixes = PrefixEncoder(
                cfg.encoder_depth,
                peft.prefix_length,
                cfg.encoder_embed_dim,
                peft.prefix_reparam,
                peft.prefix_hidden,
                name=PREFIX,
            )().astype(dtype)  # (depth, 2, L, C)

        block_cls = nn.remat(Block) if cfg.remat else Block
        for i in range(cfg.encoder_depth):
            window = 0 if i in cfg.encoder_global_attn_indexes else cfg.window_size
            block_prefix = None if prefixes is None else prefixes[i]
            x = block_cls(cfg, window, name=f"blocks_{i}")(x, block_prefix)

        out = cfg.prompt_embed_dim
        x = nn.Conv(out, (1, 1), use_bias=False, dtype=dtype, name="neck_0")(x)
        x = layer_norm_2d("neck_1", dtype)(x)
        x = nn.Conv(
            out, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=dtype, name="neck_2"
        )(x)
        return layer_norm_2d("neck_3", dtype)(x)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to C channels: (B, S, S, 3) -> (B, S/p, S/p, C)."""

    embed_dim: int
    patch_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        return nn.Conv(
            self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="proj"
        )(x)
