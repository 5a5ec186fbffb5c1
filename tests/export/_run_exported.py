"""Runs a `save_stablehlo` folder in a process that cannot import mopeft_jax.

    python _run_exported.py EXPORT_DIR INPUTS.npz OUTPUTS.npz

INPUTS holds `images` and, for each prompt set k, `point_coords_k`, `point_labels_k`,
`mask_input_k` and `has_mask_input_k`. The script encodes the images, decodes every prompt
set against the first embedding, and writes `embeddings`, `masks_k` and `iou_predictions_k`
to OUTPUTS. It uses only jax and numpy, as a deployment would; the graphs carry their own
matmul precision, so nothing here configures JAX.
"""

import importlib.abc
import json
import pathlib
import sys

BLOCKED = ("mopeft_jax", "weights_convert")


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes importing the project fail, even where it is installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported by a deployed model")
        return None


sys.meta_path.insert(0, _Blocker())

import numpy as np  # noqa: E402
from jax import export  # noqa: E402


def load(directory, name):
    exported = export.deserialize(bytearray((directory / f"{name}.exported").read_bytes()))
    with np.load(directory / f"{name}.npz") as weights:
        return exported, dict(weights)


def main(directory, inputs_file, outputs_file):
    directory = pathlib.Path(directory)
    json.loads((directory / "export.json").read_text())  # readable without mopeft_jax
    encoder, encoder_weights = load(directory, "image_encoder")
    decoder, decoder_weights = load(directory, "prompt_decoder")
    with np.load(inputs_file) as inputs:
        inputs = dict(inputs)
    embeddings = np.asarray(encoder.call(encoder_weights, inputs["images"]))
    outputs = {"embeddings": embeddings}
    k = 0
    while f"point_coords_{k}" in inputs:
        prompts = [
            inputs[f"{name}_{k}"]
            for name in ("point_coords", "point_labels", "mask_input", "has_mask_input")
        ]
        masks, iou = decoder.call(decoder_weights, embeddings[:1], *prompts)
        outputs[f"masks_{k}"], outputs[f"iou_predictions_{k}"] = np.asarray(masks), np.asarray(iou)
        k += 1
    np.savez(outputs_file, **outputs)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked


if __name__ == "__main__":
    main(*sys.argv[1:])
