"""Configuration of the Segment Anything Model, as data.

Field names follow the arguments of the official `segment_anything` builders, so a
checkpoint's config can be written down (or inferred from its tensors) one-to-one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

from mopeft_jax.preprocessing import PIXEL_MEAN, PIXEL_STD

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "chunked", "flash")
MATMUL_PRECISIONS = ("highest", "high", "default")


@dataclasses.dataclass(frozen=True)
class SamConfig:
    """Architecture and numerics of one SAM model.

    Attributes:
      encoder_embed_dim: ViT width C.
      encoder_depth: number of ViT blocks.
      encoder_num_heads: attention heads per ViT block.
      encoder_global_attn_indexes: blocks with global attention; the others use windows.
      image_size: side of the square, padded encoder input (pixels).
      patch_size: ViT patch size; the embedding grid is image_size // patch_size square.
      window_size: side of the attention windows (0: every block is global).
      mlp_ratio: hidden width of the ViT MLP over C.
      prompt_embed_dim: width of the image embedding, prompts and mask decoder (256 in SAM).
      mask_in_chans: hidden channels of the mask-prompt downscaling convs.
      decoder_depth: two-way transformer blocks.
      decoder_mlp_dim: hidden width of the decoder MLP.
      decoder_num_heads: heads of every decoder attention.
      attention_downsample_rate: internal width divisor of the decoder cross-attentions.
      num_multimask_outputs: ambiguity-aware masks (the single-mask token comes on top).
      iou_head_depth: layers of the IoU-prediction MLP.
      iou_head_hidden_dim: hidden width of the IoU-prediction MLP.
      pixel_mean, pixel_std: RGB normalisation of the input (`mopeft_jax.preprocessing`).
      dtype: compute dtype ("float32"; "bfloat16" on accelerators; "float64" for gradient
        checks, with jax_enable_x64); parameters stay float32.
      attention: the attention kernel, chosen per call by
        `attention.choose_implementation`. "auto": for the encoder's rel-pos
        attention "flash" on GPUs and "chunked" on TPUs and CPUs; elsewhere XLA's
        `jax.nn.dot_product_attention`, or "chunked" on CPUs for long sequences.
        "xla": XLA's attention with the bias materialised. "cudnn": cuDNN's fused
        GPU kernel where it supports the call (float16/bfloat16, even lengths, head
        dim a multiple of 8 up to 128), XLA's elsewhere (the decoder's 7 tokens).
        "chunked": the query-chunked XLA kernel with a flash-style backward.
        "flash": the Pallas flash-attention kernel with the bias formed in-kernel
        (`flash_attention.py`) for every call; outside GPUs it runs in Pallas'
        interpret mode, which is correct but slow.
      attention_query_chunk: at most this many queries per step of the chunked attention.
      matmul_precision: precision of the float32 matmuls and convolutions, as
        `jax.default_matmul_precision` names them: "highest" (full float32 on every
        backend), "high" (TF32 on GPUs, three bf16 passes on TPUs), "default" (each
        backend's fastest: TF32 on Ampere and later GPUs, one bf16 pass on TPUs; float32
        on CPUs). None picks "highest" for float32/float64 compute, so float32 means
        float32 everywhere (JAX's own default is TF32 on GPUs: 7e-4 relative error of the
        ViT-B encoder against PyTorch float32, 1.6e-6 with "highest"), and "default" for
        bfloat16/float16, whose matmul operands are 16-bit anyway. Ops that fix their own
        precision (bf16 attention logits in `jax.nn.dot_product_attention`) keep it.
      remat: rematerialise encoder blocks in the backward pass (saves activation memory).
      peft: a `mopeft_jax.peft.PeftConfig`, or None for plain SAM.
    """

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD
    dtype: str = "float32"
    attention: str = "auto"
    attention_query_chunk: int = 1024
    matmul_precision: Optional[str] = None
    remat: bool = False
    peft: Optional[Any] = None

    def __post_init__(self):
        object.__setattr__(
            self,
            "encoder_global_attn_indexes",
            tuple(int(i) for i in self.encoder_global_attn_indexes),
        )
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = []
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_num_heads {self.encoder_num_heads}"
            )
        if self.image_size % self.patch_size:
            problems.append(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(
                f"encoder_global_attn_indexes {bad} are outside 0..{self.encoder_depth - 1}"
            )
        internal = self.prompt_embed_dim // self.attention_downsample_rate
        if self.prompt_embed_dim % self.decoder_num_heads or internal % self.decoder_num_heads:
            problems.append(
                f"decoder_num_heads {self.decoder_num_heads} must divide prompt_embed_dim "
                f"{self.prompt_embed_dim} and its downsampled width {internal}"
            )
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            problems.append(
                f"attention {self.attention!r} is not one of {ATTENTION_IMPLEMENTATIONS}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16", "float64"):
            problems.append(f"dtype {self.dtype!r} is not float32, bfloat16, float16 or float64")
        if self.matmul_precision not in (None, *MATMUL_PRECISIONS):
            problems.append(
                f"matmul_precision {self.matmul_precision!r} is not None or one of "
                f"{MATMUL_PRECISIONS}"
            )
        if problems:
            raise ValueError("Invalid SamConfig: " + "; ".join(problems) + ".")

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @property
    def precision(self) -> str:
        """The matmul precision in effect: `matmul_precision`, or the dtype's default."""
        if self.matmul_precision is not None:
            return self.matmul_precision
        return "highest" if self.dtype in ("float32", "float64") else "default"

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's mask logits (256 for the official models)."""
        return 4 * self.embedding_size

    def replace(self, **changes) -> "SamConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def vit_b(cls, **overrides) -> "SamConfig":
        """SAM ViT-B (`sam_vit_b_01ec64.pth`)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "SamConfig":
        """A SAM small enough to pretrain and adapt on a laptop CPU in minutes (the offline
        demo's): 128-pixel input, 8-pixel patches, 4 blocks of width 96, a 64-wide decoder."""
        fields = dict(
            encoder_embed_dim=96,
            encoder_depth=4,
            encoder_num_heads=3,
            encoder_global_attn_indexes=(1, 3),
            image_size=128,
            patch_size=8,
            window_size=4,
            prompt_embed_dim=64,
            mask_in_chans=8,
            decoder_depth=2,
            decoder_mlp_dim=256,
            decoder_num_heads=4,
            iou_head_hidden_dim=64,
        )
        return cls(**{**fields, **overrides})

    @classmethod
    def vit_l(cls, **overrides) -> "SamConfig":
        """SAM ViT-L (`sam_vit_l_0b3195.pth`)."""
        fields = dict(
            encoder_embed_dim=1024,
            encoder_depth=24,
            encoder_num_heads=16,
            encoder_global_attn_indexes=(5, 11, 17, 23),
        )
        return cls(**{**fields, **overrides})

    @classmethod
    def vit_h(cls, **overrides) -> "SamConfig":
        """SAM ViT-H (`sam_vit_h_4b8939.pth`)."""
        fields = dict(
            encoder_embed_dim=1280,
            encoder_depth=32,
            encoder_num_heads=16,
            encoder_global_attn_indexes=(7, 15, 23, 31),
        )
        return cls(**{**fields, **overrides})

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (the PEFT config, if any, as its own dict)."""
        d = dataclasses.asdict(self)
        if self.peft is not None:
            d["peft"] = dataclasses.asdict(self.peft)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SamConfig":
        """Inverse of `to_dict`."""
        d = dict(d)
        if d.get("peft") is not None:
            from mopeft_jax.peft.config import PeftConfig  # pylint: disable=g-import-not-at-top

            # Configs saved before what trains left the architecture carry a "trainable".
            peft = {k: v for k, v in d["peft"].items() if k != "trainable"}
            d["peft"] = PeftConfig(**peft)
        return cls(**d)
