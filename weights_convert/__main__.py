"""`python -m weights_convert SRC OUT_DIR`: convert a SAM checkpoint to an orbax folder;
`python -m weights_convert --to-pytorch FLAX_DIR OUT.pth`: the way back."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

import flax
import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weights_convert",
        description="Convert an official (or Hugging Face) PyTorch SAM checkpoint into a "
        "mopeft-jax checkpoint folder, loadable with mopeft_jax.load_pretrained(OUT), or with "
        "--to-pytorch a mopeft-jax folder into an official segment_anything checkpoint.",
    )
    parser.add_argument(
        "source",
        help="sam_vit_*.pth, a .safetensors file or a HF folder; with --to-pytorch a "
        "mopeft-jax folder (config.json + params/)",
    )
    parser.add_argument(
        "out",
        help="folder to write (config.json + orbax params/); with --to-pytorch the .pth file",
    )
    parser.add_argument(
        "--to-pytorch",
        action="store_true",
        help="write the official state dict of a plain SAM, or of SAM with ungated LoRA, "
        "which is merged into the weights first",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument(
        "--decoder-num-heads",
        type=int,
        default=None,
        help="mask-decoder heads (not recorded in the weights; SAM uses 8)",
    )
    args = parser.parse_args(argv)
    if args.to_pytorch and args.decoder_num_heads is not None:
        parser.error("--decoder-num-heads is read from config.json with --to-pytorch")

    # Imported here so that --help answers without loading JAX.
    from weights_convert import CheckpointError  # pylint: disable=g-import-not-at-top

    try:
        return _to_pytorch(args) if args.to_pytorch else _to_flax(args)
    except (CheckpointError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _to_flax(args) -> int:
    from mopeft_jax.pretrained import save_pretrained  # pylint: disable=g-import-not-at-top
    from weights_convert import load_pytorch_checkpoint  # pylint: disable=g-import-not-at-top

    overrides = {}
    if args.decoder_num_heads is not None:
        overrides["decoder_num_heads"] = args.decoder_num_heads
    config, params = load_pytorch_checkpoint(args.source, **overrides)
    save_pretrained(args.out, config, params, overwrite=args.overwrite)
    count = sum(int(np.prod(v.shape)) for v in flax.traverse_util.flatten_dict(params).values())
    print(
        f"Converted {args.source}: ViT dim {config.encoder_embed_dim}, depth "
        f"{config.encoder_depth}, {config.encoder_num_heads} heads, {count:,} parameters -> "
        f"{args.out}"
    )
    return 0


def _to_pytorch(args) -> int:
    # pylint: disable=g-import-not-at-top
    import torch

    from mopeft_jax.export import merge_lora
    from mopeft_jax.pretrained import load_pretrained
    from weights_convert import to_official_state_dict

    # pylint: enable=g-import-not-at-top
    out = pathlib.Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    config, params = load_pretrained(args.source)
    merged = config.peft is not None and config.peft.lora and not config.peft.gated
    if merged:
        config, params = merge_lora(config, params)
    state = to_official_state_dict(params, config)
    # Written next to OUT and renamed into place: an interrupted run leaves no partial file.
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        torch.save(state, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    count = sum(t.numel() for t in state.values())
    print(
        f"Converted {args.source}{' (LoRA merged)' if merged else ''}: {len(state)} tensors, "
        f"{count:,} parameters -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
