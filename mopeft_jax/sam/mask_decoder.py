"""SAM's mask decoder (`segment_anything.modeling.mask_decoder`), in NHWC."""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.layers import MLP, Embedding, PatchConvTranspose, gelu, layer_norm_2d
from mopeft_jax.sam.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts mask logits and their IoU from an image embedding and prompt embeddings."""

    config: SamConfig

    @nn.compact
    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_prompt_embeddings: jax.Array,
        dense_prompt_embeddings: jax.Array,
        multimask_output: bool,
    ) -> Tuple[jax.Array, jax.Array]:
        """Masks for a batch of prompt sets.

        Args:
          image_embeddings: (B or 1, h, w, D); one embedding serves all B prompt sets if 1.
          image_pe: (h, w, D) positional encoding of the grid.
          sparse_prompt_embeddings: (B, N, D).
          dense_prompt_embeddings: (B, h, w, D).
          multimask_output: the multimask outputs (1..M) if True, else the single-mask output 0.

        Returns:
          Mask logits (B, M, 4h, 4w) and IoU predictions (B, M), M = num_multimask_outputs or 1.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        dim = cfg.prompt_embed_dim
        num_mask_tokens = cfg.num_multimask_outputs + 1
        b = sparse_prompt_embeddings.shape[0]

        output_tokens = jnp.concatenate(
            [
                Embedding(1, dim, name="iou_token")(),
                Embedding(num_mask_tokens, dim, name="mask_tokens")(),
            ],
            axis=0,
        )
        tokens = jnp.concatenate(
            [
                jnp.broadcast_to(output_tokens, (b, *output_tokens.shape)),
                sparse_prompt_embeddings.astype(output_tokens.dtype),
            ],
            axis=1,
        ).astype(dtype)
        src = (image_embeddings + dense_prompt_embeddings).astype(dtype)
        _, h, w, _ = src.shape
        hs, src = TwoWayTransformer(cfg, name="transformer")(
            src, image_pe[None].astype(dtype), tokens
        )
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + num_mask_tokens]

        x = src.reshape(b, h, w, dim)
        x = PatchConvTranspose(dim // 4, dtype=dtype, name="output_upscaling_0")(x)
        x = gelu(layer_norm_2d("output_upscaling_1", dtype)(x))
        x = PatchConvTranspose(dim // 8, dtype=dtype, name="output_upscaling_3")(x)
        upscaled = gelu(x)  # (B, 4h, 4w, D/8)

        hyper_in = jnp.stack(
            [
                MLP(dim, dim // 8, 3, dtype=dtype, name=f"output_hypernetworks_mlps_{i}")(
                    mask_tokens_out[:, i]
                )
                for i in range(num_mask_tokens)
            ],
            axis=1,
        )  # (B, T, D/8)
        masks = jnp.einsum("btc,bhwc->bthw", hyper_in, upscaled)
        iou_pred = MLP(
            cfg.iou_head_hidden_dim,
            num_mask_tokens,
            cfg.iou_head_depth,
            dtype=dtype,
            name="iou_prediction_head",
        )(iou_token_out)

        outputs = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, outputs], iou_pred[:, outputs]
