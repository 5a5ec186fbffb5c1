"""The offline default: MoPEFT against every baseline on a CPU in minutes.

    python -m experiments.demo [--workdir outputs/demo]

1. Pretrains a tiny SAM on the synthetic source domain (every weight, from scratch), or
   loads it from the cache if this pretraining ran before.
2. Adapts it to the four shifted synthetic domains with every method: zero-shot, LoRA,
   prefix tuning, adapters, full fine-tuning, MoPEFT and MoPEFT with the input expert.
3. Evaluates each MESS-style (oracle box prompts, dataset-level mIoU), prints the table
   and writes results.md/.csv and PNG plots (gates, loss curves, masks) to WORKDIR.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import pathlib
import sys
import time

import jax

from experiments.compare import run_comparison
from experiments.configs import demo as demo_config
from experiments.train import sam_config, train
from mopeft_jax import load_pretrained, save_pretrained
from mopeft_jax.data import SOURCE_DOMAIN
from mopeft_jax.host_memory import retain_freed_memory

DEFAULT_CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))


def pretrain_config(config):
    """The demo config turned into source-domain pretraining of every weight."""
    pre = copy.deepcopy(config)
    pre.peft = "full_finetune"
    pre.data.name = SOURCE_DOMAIN
    pre.data.num_examples = config.pretrain.num_examples
    pre.pipeline.batch_size = config.pretrain.batch_size
    pre.train.steps = config.pretrain.steps
    pre.train.checkpoint_every = max(config.pretrain.steps // 4, 1)
    rate = config.pretrain.learning_rate
    pre.optimizer.learning_rates.sam = rate
    pre.optimizer.learning_rates.decoder = rate
    pre.optimizer.warmup_steps = max(config.pretrain.steps // 20, 1)
    return pre


def pretrained_sam(config, cache_root: pathlib.Path, progress: bool = True):
    """(params) of the tiny SAM pretrained on the source domain, cached by its config."""
    pre = pretrain_config(config)
    key = hashlib.sha256(
        json.dumps(
            {
                k: pre[k].to_dict() if hasattr(pre[k], "to_dict") else pre[k]
                for k in ("model", "data", "pipeline", "optimizer", "train", "loss")
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:12]
    cached = cache_root / f"pretrained_sam_{key}"
    if cached.exists():
        print(f"Using the pretrained tiny SAM cached in {cached}")
        return load_pretrained(cached)[1]
    print(f"Pretraining a tiny SAM on the '{SOURCE_DOMAIN}' domain ({pre.train.steps} steps) ...")
    began = time.perf_counter()
    result = train(pre, cache_root / f"pretraining_{key}", progress=progress)
    model_config, _ = sam_config(pre)
    save_pretrained(cached, model_config.replace(peft=None), result.params, overwrite=True)
    print(f"Pretrained in {time.perf_counter() - began:.0f} s; cached in {cached}")
    return result.params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="outputs/demo", help="where results and plots go")
    parser.add_argument(
        "--cache-dir",
        default=str(DEFAULT_CACHE / "mopeft_jax"),
        help="where the pretrained tiny SAM is cached",
    )
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--adapt-steps", type=int, default=None)
    parser.add_argument("--eval-images", type=int, default=None)
    parser.add_argument("--datasets", nargs="*", default=None, help="target domains")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    retain_freed_memory()  # before the first computation; see mopeft_jax.host_memory

    config = demo_config.get_config()
    if args.pretrain_steps is not None:
        config.pretrain.steps = args.pretrain_steps
    if args.adapt_steps is not None:
        config.train.steps = args.adapt_steps
    if args.eval_images is not None:
        config.eval.max_images = args.eval_images
    if args.datasets:
        config.compare.datasets = args.datasets
    if args.methods:
        config.compare.methods = args.methods
    workdir = pathlib.Path(args.workdir)
    if workdir.exists() and any(workdir.iterdir()):
        # A comparison's runs resume from their checkpoints; results start afresh.
        for name in ("results.jsonl", "results.md", "results.csv"):
            (workdir / name).unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    print(f"mopeft-jax demo on {jax.devices()[0].platform}; outputs in {workdir}")
    params = pretrained_sam(config, pathlib.Path(args.cache_dir), progress=not args.no_progress)
    run_comparison(config, workdir, params=params, progress=not args.no_progress)
    print()
    print((workdir / "results.md").read_text())
    print(f"Plots: {workdir}/gates.png, {workdir}/loss_curves.png, {workdir}/*/masks_*.png")
    print(f"Total time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
