"""SAM's prompt encoder (`segment_anything.modeling.prompt_encoder`), in NHWC."""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.layers import Embedding, gelu, layer_norm_2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier features of 2-D coordinates (a fixed Gaussian matrix, stored as a param)."""

    num_pos_feats: int

    @nn.compact
    def __call__(self, coords: jax.Array) -> jax.Array:
        """Coordinates normalised to [0, 1], (..., 2) as (x, y) -> (..., 2 * num_pos_feats)."""
        gaussian = self.param(
            "positional_encoding_gaussian_matrix",
            nn.initializers.normal(1.0),
            (2, self.num_pos_feats),
        )
        coords = (2 * coords - 1) @ gaussian
        coords = 2 * np.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)


class PromptEncoder(nn.Module):
    """Embeds points, boxes and mask inputs for the mask decoder."""

    config: SamConfig

    def setup(self):
        cfg = self.config
        dim = cfg.prompt_embed_dim
        dtype = jnp.dtype(cfg.dtype)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        # pos/neg point, then the two box corners. List items are named like torch's ModuleList
        # entries (point_embeddings_0, mask_downscaling_3, ...), which the converter relies on.
        self.point_embeddings = [Embedding(1, dim) for i in range(4)]
        self.not_a_point_embed = Embedding(1, dim)
        self.no_mask_embed = Embedding(1, dim)
        mask_chans = cfg.mask_in_chans
        self.mask_downscaling = [
            nn.Conv(mask_chans // 4, (2, 2), strides=(2, 2), padding="VALID", dtype=dtype),
            layer_norm_2d(None, dtype),
            gelu,
            nn.Conv(mask_chans, (2, 2), strides=(2, 2), padding="VALID", dtype=dtype),
            layer_norm_2d(None, dtype),
            gelu,
            nn.Conv(dim, (1, 1), dtype=dtype),
        ]

    def _encode_coords(self, coords: jax.Array) -> jax.Array:
        """Pixel coordinates (..., 2) as (x, y) in the padded input frame -> (..., D)."""
        size = self.config.image_size
        return self.pe_layer(coords.astype(jnp.float32) / jnp.array([size, size], jnp.float32))

    def dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid, (h, w, D)."""
        n = self.config.embedding_size
        centers = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
        y, x = jnp.meshgrid(centers, centers, indexing="ij")
        return self.pe_layer(jnp.stack([x, y], axis=-1))

    def embed_points(self, coords: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """Points (B, N, 2) with labels (B, N) in {-1 pad, 0 negative, 1 positive} -> (B, N', D).

        With `pad` (no boxes) one not-a-point is appended, as SAM does.
        """
        coords = coords.astype(jnp.float32) + 0.5  # to the pixel centre
        labels = labels.astype(jnp.int32)
        if pad:
            b = coords.shape[0]
            coords = jnp.concatenate([coords, jnp.zeros((b, 1, 2), coords.dtype)], axis=1)
            labels = jnp.concatenate([labels, -jnp.ones((b, 1), labels.dtype)], axis=1)
        embedding = self._encode_coords(coords)
        labels = labels[..., None]
        embedding = jnp.where(labels == -1, self.not_a_point_embed(), embedding)
        embedding += jnp.where(labels == 0, self.point_embeddings[0](), 0.0)
        embedding += jnp.where(labels == 1, self.point_embeddings[1](), 0.0)
        return embedding

    def embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """Boxes (B, 4) as x0, y0, x1, y1 -> corner embeddings (B, 2, D)."""
        corners = boxes.astype(jnp.float32).reshape(-1, 2, 2) + 0.5
        embedding = self._encode_coords(corners)
        corner_embeds = jnp.concatenate([self.point_embeddings[2](), self.point_embeddings[3]()])
        return embedding + corner_embeds

    def embed_masks(self, masks: jax.Array) -> jax.Array:
        """Mask logits (B, 4h, 4w, 1) -> dense embeddings (B, h, w, D)."""
        x = masks.astype(jnp.dtype(self.config.dtype))
        for layer in self.mask_downscaling:
            x = layer(x)
        return x

    def __call__(
        self,
        batch_size: int,
        points: Optional[Tuple[jax.Array, jax.Array]],
        boxes: Optional[jax.Array],
        masks: Optional[jax.Array],
    ) -> Tuple[jax.Array, jax.Array]:
        """Sparse (B, N, D) and dense (B, h, w, D) prompt embeddings."""
        dim = self.config.prompt_embed_dim
        sparse = [jnp.zeros((batch_size, 0, dim), jnp.float32)]
        if points is not None:
            sparse.append(self.embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        sparse = jnp.concatenate(sparse, axis=1)
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            n = self.config.embedding_size
            dense = jnp.broadcast_to(self.no_mask_embed()[0], (batch_size, n, n, dim))
        return sparse, dense
