"""The official PyTorch SAM (`segment_anything`) built from a `SamConfig` with random weights:
the reference of the parity tests and of the benchmark.

`segment_anything` imports torchvision at package import (for its automatic mask generator and
its PIL-based resize), though its model code never uses it. Where torchvision is not installed
(it does not import on the project's CPU machines), importing this module first registers empty
stand-ins so that the official code imports; calling one of them fails loudly.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import types

import numpy as np
import torch


def register_torchvision_stand_in() -> bool:
    """Registers empty `torchvision` modules if torchvision is not installed; True if it did."""
    if importlib.util.find_spec("torchvision") is not None or "torchvision" in sys.modules:
        return False

    def unavailable(*args, **kwargs):
        raise RuntimeError(
            "torchvision is not installed; this stand-in only lets segment_anything import."
        )

    modules = {
        "torchvision": {},
        "torchvision.ops": {},
        "torchvision.ops.boxes": {"batched_nms": unavailable, "box_area": unavailable},
        "torchvision.transforms": {},
        "torchvision.transforms.functional": {"resize": unavailable, "to_pil_image": unavailable},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    return True


@contextlib.contextmanager
def torchvision_stand_in_hidden():
    """The block runs with the stand-in's modules out of `sys.modules`.

    transformers asks `importlib.util.find_spec("torchvision")` on import, which fails on a
    module without a spec; imported in this block, it finds no torchvision (and caches that).
    """
    names = [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]
    stand_in = {n: sys.modules[n] for n in names if sys.modules[n].__spec__ is None}
    for name in stand_in:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(stand_in)


register_torchvision_stand_in()

from segment_anything.modeling import (  # noqa: E402  (after the stand-in)
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from mopeft_jax.sam.config import SamConfig  # noqa: E402


def build_official_sam(config: SamConfig, seed: int = 0) -> Sam:
    """The official model for `config`, every tensor randomised (see `randomize_`)."""
    torch.manual_seed(seed)
    grid = config.embedding_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            qkv_bias=True,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
                attention_downsample_rate=config.attention_downsample_rate,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )
    randomize_(model, seed)
    return model.eval()


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Perturbs every parameter and buffer.

    Tensors that start constant (LayerNorm scales at one, rel-pos tables and position
    embeddings at zero) would hide transposition and naming bugs, so they get Gaussian
    noise of 0.2; the others get noise of their own spread, which keeps activations at
    the scale of a trained model's instead of blowing up with depth.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name]
        if name.endswith(("pixel_mean", "pixel_std")):
            continue
        spread = float(t.std()) if t.numel() > 1 else 0.0
        spread = spread if spread > 0 else 0.2
        t.add_(torch.randn(t.shape, generator=generator) * spread)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous()


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def official_decode(
    model: Sam,
    image_embedding: np.ndarray,
    point_coords=None,
    point_labels=None,
    boxes=None,
    mask_inputs=None,
    multimask_output=True,
):
    """The official prompt encoder + mask decoder for one image embedding (1, h, w, D)."""
    as_t = lambda x: None if x is None else torch.from_numpy(np.asarray(x))  # noqa: E731
    points = None if point_coords is None else (as_t(point_coords).float(), as_t(point_labels))
    masks = None if mask_inputs is None else nchw(mask_inputs)
    sparse, dense = model.prompt_encoder(points=points, boxes=as_t(boxes), masks=masks)
    masks, iou = model.mask_decoder(
        image_embeddings=nchw(image_embedding),
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
    )
    return masks.numpy(), iou.numpy()
