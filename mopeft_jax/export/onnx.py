"""SAM's prompt encoder + mask decoder as ONNX, the part the official repository exports.

`save_decoder_onnx(path, config, params)` converts the prompt decoder of `graphs` with
jax2onnx, its weights baked in as initializers. Its inputs mirror the official
`segment_anything.utils.onnx.SamOnnxModel` (scripts/export_onnx_model.py), names, layouts and
dtypes, N = the dynamic axis "num_points":

  image_embeddings (1, D, h, w) float32  NCHW, as the official encoder makes them; the NHWC
                                         embeddings of our encoder transposed (0, 3, 1, 2)
  point_coords     (1, N, 2)    float32  (x, y) pixels of the padded input frame
  point_labels     (1, N)       float32  1 / 0 point, 2 / 3 box corners, -1 padding (the
                                         official convention, see `graphs`)
  mask_input       (1, 1, 4h, 4w) float32 low-res mask logits
  has_mask_input   (1,)         float32  1 to use mask_input, else 0

and its outputs are the official graph's last two:

  iou_predictions  (1, M)        float32
  low_res_masks    (1, M, 4h, 4w) float32

Differences from the official graph:
- No `orig_im_size` input and no upscaled `masks` output: the official graph resizes the masks
  to a size given as input data, a shape that depends on a value, which jax2onnx (like every
  JAX trace) cannot express. Upscale `low_res_masks` on the host: bilinear to S x S, crop to
  the resized image, bilinear to the original size (`mopeft_jax.sam.transforms.
  postprocess_masks`, or `F.interpolate` as the official `SamOnnxModel.mask_postprocessing`).
- M is the three multimask outputs (`multimask_output=True`) or the single-mask output, as
  `Sam.decode`; the official graph returns all four tokens' masks, or with
  `return_single_mask` picks one by the number of points.
- One prompt set (batch 1), as the official graph; the StableHLO export takes many.

jax2onnx, onnx and onnxruntime are optional (see `_import_jax2onnx`).
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from jax import export

from mopeft_jax.export.graphs import DECODER_PARAMS, flat_params, prompt_decoder_graph
from mopeft_jax.sam.config import SamConfig

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
)
OUTPUT_NAMES = ("iou_predictions", "low_res_masks")
INSTALL = (
    "pip install onnx==1.23.2 onnx-ir==1.1.0 onnxruntime==1.32.0 && "
    "pip install --no-deps jax2onnx==0.17.1"
)


def _import_jax2onnx():
    """jax2onnx, or an ImportError that says how to install it.

    jax2onnx 0.17.1 is the first release that knows jax 0.10's primitives; its metadata pins
    orbax-checkpoint < 0.11.37, which it never imports and which mopeft-jax needs newer, so it
    is installed without its dependencies.
    """
    try:
        import jax2onnx  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ImportError(f"ONNX export needs jax2onnx and onnx: {INSTALL}") from None
    return jax2onnx


@contextlib.contextmanager
def _quiet_converter():
    """jax2onnx loads a plugin for every library it supports, logging a traceback for each
    one that is not installed (equinox, dm-pix), and warns about the shapes of its own
    constants; none of it concerns this graph."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def decoder_onnx(config: SamConfig, params: Any, *, multimask_output: bool = True):
    """The prompt decoder as an `onnx.ModelProto` (inputs and outputs in the module docstring).

    `params` are a SAM param tree (PEFT layers, if any, sit in the image encoder and are not
    used); the decoder's weights become initializers.
    """
    jax2onnx = _import_jax2onnx()
    decode = prompt_decoder_graph(config, multimask_output)
    weights = flat_params(params, DECODER_PARAMS)

    def official_layout(image_embeddings, point_coords, point_labels, mask_input, has_mask):
        masks, iou = decode(
            weights,
            image_embeddings.transpose(0, 2, 3, 1),
            point_coords,
            point_labels,
            mask_input.transpose(0, 2, 3, 1),
            has_mask,
        )
        return iou, masks

    (points,) = export.symbolic_shape("num_points")
    grid, dim, low_res = config.embedding_size, config.prompt_embed_dim, config.low_res_mask_size
    specs = [
        jax.ShapeDtypeStruct(shape, jnp.float32)
        for shape in [
            (1, dim, grid, grid),
            (1, points, 2),
            (1, points),
            (1, 1, low_res, low_res),
            (1,),
        ]
    ]
    # Traced to primitives here, outside jax2onnx: it converts the Flax modules it knows as a
    # whole, with its own rules, and the graph should follow this model's code op for op.
    traced = jax.make_jaxpr(official_layout)(*specs)

    def primitives(*args):
        return jax.core.eval_jaxpr(traced.jaxpr, traced.consts, *args)

    with _quiet_converter():
        return jax2onnx.to_onnx(
            primitives,
            specs,
            model_name="sam_prompt_decoder",
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
        )


def save_decoder_onnx(
    path, config: SamConfig, params: Any, *, multimask_output: bool = True
) -> pathlib.Path:
    """Writes `decoder_onnx(config, params)` to `path` (a .onnx file) and returns the path."""
    import onnx  # pylint: disable=g-import-not-at-top  (installed with jax2onnx)

    model = decoder_onnx(config, params, multimask_output=multimask_output)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
