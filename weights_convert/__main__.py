"""`python -m weights_convert SRC OUT_DIR`: convert a SAM checkpoint to an orbax folder."""

from __future__ import annotations

import argparse
import sys

import flax
import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weights_convert",
        description="Convert an official (or Hugging Face) PyTorch SAM checkpoint into a "
        "mopeft-jax checkpoint folder, loadable with mopeft_jax.load_pretrained(OUT_DIR).",
    )
    parser.add_argument("source", help="sam_vit_*.pth, a .safetensors file or a HF folder")
    parser.add_argument("out_dir", help="folder to write (config.json + orbax params/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    parser.add_argument(
        "--decoder-num-heads",
        type=int,
        default=None,
        help="mask-decoder heads (not recorded in the weights; SAM uses 8)",
    )
    args = parser.parse_args(argv)

    # Imported here so that --help answers without loading JAX.
    from mopeft_jax.pretrained import save_pretrained  # pylint: disable=g-import-not-at-top
    from weights_convert import CheckpointError, load_pytorch_checkpoint  # pylint: disable=g-import-not-at-top

    overrides = {}
    if args.decoder_num_heads is not None:
        overrides["decoder_num_heads"] = args.decoder_num_heads
    try:
        config, params = load_pytorch_checkpoint(args.source, **overrides)
        save_pretrained(args.out_dir, config, params, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    count = sum(int(np.prod(v.shape)) for v in flax.traverse_util.flatten_dict(params).values())
    print(
        f"Converted {args.source}: ViT dim {config.encoder_embed_dim}, depth "
        f"{config.encoder_depth}, {config.encoder_num_heads} heads, {count:,} parameters -> "
        f"{args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
