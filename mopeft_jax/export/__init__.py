"""Deployment: merged weights, serialised StableHLO (`jax.export`) and an ONNX prompt decoder.

    config, params = prepare_for_export(config, params)   # merge LoRA, fold the prefix
    save_stablehlo("sam_export/", config, params)          # encoder + prompt decoder
    save_decoder_onnx("decoder.onnx", config, params)      # needs jax2onnx (see `onnx`)

The way back to PyTorch is `weights_convert.to_official_state_dict`.
"""

from mopeft_jax.export.graphs import point_prompts
from mopeft_jax.export.merge import fold_prefix, merge_lora, prepare_for_export
from mopeft_jax.export.onnx import decoder_onnx, save_decoder_onnx
from mopeft_jax.export.stablehlo import (
    export_image_encoder,
    export_prompt_decoder,
    load_stablehlo,
    save_stablehlo,
)

__all__ = [
    "merge_lora",
    "fold_prefix",
    "prepare_for_export",
    "export_image_encoder",
    "export_prompt_decoder",
    "save_stablehlo",
    "load_stablehlo",
    "decoder_onnx",
    "save_decoder_onnx",
    "point_prompts",
]
