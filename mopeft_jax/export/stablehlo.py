"""SAM as serialised StableHLO (`jax.export`): run it without mopeft-jax, on any JAX platform.

`save_stablehlo(directory, config, params)` writes, after `prepare_for_export`:

  image_encoder.exported    jax.export.Exported.serialize() of the image encoder
  image_encoder.npz         its weights (below)
  prompt_decoder.exported   the prompt encoder + mask decoder, a symbolic number of prompts
  prompt_decoder.npz        their weights
  export.json               the (prepared) SamConfig and the export options

Calling convention. Each graph takes its weights as its first argument, a dict {path: array}
keyed by the '/'-joined Flax parameter path (exactly the arrays of its .npz file), so weights
are not baked into the graph: no 2 GB limit (ViT-H), one file of weights for every platform.
All arrays are float32 unless said otherwise; S = image_size, h = w = S / patch_size,
D = prompt_embed_dim (1024, 64, 256 for the official models).

  image encoder: (weights, images) -> embeddings
    images      (B, S, S, 3)  RGB resized so that the longest side is S, normalised with
                              export.json's pixel_mean / pixel_std and zero-padded to S x S at
                              the bottom and right (`mopeft_jax.preprocessing.preprocess_image`,
                              the official `ResizeLongestSide` + `Sam.preprocess`); B fixed at
                              export (1 by default).
    embeddings  (B, h, w, D)

  prompt decoder: (weights, image_embeddings, point_coords, point_labels, mask_input,
                   has_mask_input) -> (masks, iou_predictions)
    image_embeddings (1, h, w, D)  one image, shared by the B prompt sets
    point_coords     (B, N, 2)     (x, y) pixels of the resized image (the official
                                   `ResizeLongestSide.apply_coords`); B and N symbolic
    point_labels     (B, N) int32  1 foreground, 0 background, 2 / 3 box top-left /
                                   bottom-right corner, -1 padding. Without a box, end every
                                   prompt set with a padding point (0, 0) labelled -1, as the
                                   official predictor does (`export.point_prompts`).
    mask_input       (B, 4h, 4w, 1) low-res mask logits (a previous prediction) or zeros
    has_mask_input   (B,)          1 where mask_input is used, else 0
    masks            (B, M, 4h, 4w) low-res mask logits; M = num_multimask_outputs (3) with
                                   multimask_output, else 1; upscale to S x S, crop the
                                   padding and resize to the original size (bilinear)
    iou_predictions  (B, M)

In a process without mopeft-jax:

    from jax import export
    encoder = export.deserialize(bytearray(open("image_encoder.exported", "rb").read()))
    embeddings = encoder.call(dict(np.load("image_encoder.npz")), images)

Graphs run on the platforms they were exported for: the exporting machine's by default, or
e.g. `platforms=("cpu", "cuda")`, which needs no GPU. `attention="auto"` picks the encoder's
attention kernel for the exporting machine (the chunked one on a CPU, which runs anywhere but
is not the fastest on a GPU); export with `attention="xla"` or on the target for its own.
Float32 configs are traced with float32 matmul precision, which a GPU would otherwise lower
to TF32.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from mopeft_jax.export.graphs import (
    DECODER_PARAMS,
    ENCODER_PARAMS,
    flat_params,
    image_encoder_graph,
    prompt_decoder_graph,
)
from mopeft_jax.export.merge import prepare_for_export
from mopeft_jax.sam.config import SamConfig
from mopeft_jax.sam.model import Sam

ENCODER = "image_encoder"
DECODER = "prompt_decoder"
METADATA_FILE = "export.json"
FORMAT = "mopeft-jax-stablehlo/1"


def _spec(shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


def _weight_specs(config: SamConfig, roots: Sequence[str]) -> dict:
    """Shapes of the flat weights dict of the graph over `roots`, without allocating them."""
    shapes = jax.eval_shape(Sam(config).init_params, jax.random.key(0))
    return {k: _spec(v.shape, v.dtype) for k, v in flat_params(shapes, roots).items()}


def _export(config: SamConfig, fn: Callable, specs, platforms) -> export.Exported:
    precision = "highest" if config.dtype in ("float32", "float64") else None
    with jax.default_matmul_precision(precision):
        return export.export(jax.jit(fn), platforms=platforms)(*specs)


def export_image_encoder(
    config: SamConfig, *, batch_size: int = 1, platforms: Optional[Sequence[str]] = None
) -> export.Exported:
    """The image encoder, `(weights, images (batch_size, S, S, 3)) -> (batch_size, h, w, D)`.

    The batch is fixed: the encoder's chunked attention (`attention="auto"` on a CPU) tiles
    its work by the number of (image, head) pairs, which must be known when tracing.
    """
    size = config.image_size
    specs = (_weight_specs(config, ENCODER_PARAMS), _spec((batch_size, size, size, 3)))
    return _export(config, image_encoder_graph(config), specs, platforms)


def export_prompt_decoder(
    config: SamConfig,
    *,
    multimask_output: bool = True,
    platforms: Optional[Sequence[str]] = None,
) -> export.Exported:
    """The prompt encoder + mask decoder with b prompt sets of n points, both symbolic.

    `(weights, image_embeddings (1, h, w, D), point_coords (b, n, 2), point_labels (b, n)
    int32, mask_input (b, 4h, 4w, 1), has_mask_input (b,)) -> (masks (b, M, 4h, 4w),
    iou_predictions (b, M))`; see the module docstring.
    """
    batch, points = export.symbolic_shape("b, n")
    grid, dim, low_res = config.embedding_size, config.prompt_embed_dim, config.low_res_mask_size
    specs = (
        _weight_specs(config, DECODER_PARAMS),
        _spec((1, grid, grid, dim)),
        _spec((batch, points, 2)),
        _spec((batch, points), jnp.int32),
        _spec((batch, low_res, low_res, 1)),
        _spec((batch,)),
    )
    return _export(config, prompt_decoder_graph(config, multimask_output), specs, platforms)


def save_stablehlo(
    directory,
    config: SamConfig,
    params: Any,
    *,
    multimask_output: bool = True,
    batch_size: int = 1,
    platforms: Optional[Sequence[str]] = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes both graphs and their weights to `directory` (the files of the module docstring).

    The params go through `prepare_for_export` first (ungated LoRA merged, prefix folded).

    Returns:
      The directory.

    Raises:
      FileExistsError: a file to write exists and `overwrite` is False.
    """
    directory = pathlib.Path(directory)
    names = [f"{g}{ext}" for g in (ENCODER, DECODER) for ext in (".exported", ".npz")]
    existing = [n for n in [*names, METADATA_FILE] if (directory / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{directory} already holds {', '.join(existing)}; pass overwrite=True to replace."
        )
    config, params = prepare_for_export(config, params)
    graphs = {
        ENCODER: (
            export_image_encoder(config, batch_size=batch_size, platforms=platforms),
            ENCODER_PARAMS,
        ),
        DECODER: (
            export_prompt_decoder(config, multimask_output=multimask_output, platforms=platforms),
            DECODER_PARAMS,
        ),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, (exported, roots) in graphs.items():
        (directory / f"{name}.exported").write_bytes(exported.serialize())
        weights = {k: np.asarray(v, np.float32) for k, v in flat_params(params, roots).items()}
        np.savez(directory / f"{name}.npz", **weights)
    metadata = {
        "format": FORMAT,
        "multimask_output": multimask_output,
        "platforms": list(graphs[ENCODER][0].platforms),
        "config": config.to_dict(),
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return directory


def load_stablehlo(directory) -> Tuple[Callable, Callable, dict]:
    """`(encode, decode, metadata)` from a `save_stablehlo` folder, the weights bound.

    `encode(images)` and `decode(image_embeddings, point_coords, point_labels, mask_input,
    has_mask_input)` take the arrays of the module docstring. (Without mopeft-jax, do what
    this does: `jax.export.deserialize` each .exported file and pass its .npz weights.)
    """
    directory = pathlib.Path(directory)
    metadata_file = directory / METADATA_FILE
    if not metadata_file.is_file():
        raise FileNotFoundError(
            f"{directory} is not a StableHLO export: no {METADATA_FILE}; write one with "
            "mopeft_jax.export.save_stablehlo."
        )
    metadata = json.loads(metadata_file.read_text())

    def load(name):
        exported = export.deserialize(bytearray((directory / f"{name}.exported").read_bytes()))
        with np.load(directory / f"{name}.npz") as weights:
            weights = dict(weights)
        return lambda *args: exported.call(weights, *args)

    return load(ENCODER), load(DECODER), metadata
