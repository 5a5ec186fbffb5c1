"""The offline demo's SAM: a small SAM pretrained on the synthetic source domain, cached.

The pretraining is an ordinary training run (full fine-tuning from a random init) in a cache
folder named after its config, so a second demo reuses it and an interrupted one resumes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib

import ml_collections

from mopeft_jax.data.synthetic import SOURCE_DOMAIN
from mopeft_jax.experiment.trainer import train
from mopeft_jax.pretrained import METADATA_FILE, RUN_EXPORT

# Sections of a config that do not change the pretrained weights (left out of the cache key).
_NOT_KEY = ("eval", "compare", "pretrain", "mesh")


def pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The demo config turned into source-domain pretraining of every weight, from scratch."""
    pre = copy.deepcopy(config)
    pre.checkpoint = ""
    pre.peft = "full_finetune"
    pre.trainable = ""
    pre.data.name = f"synthetic:{SOURCE_DOMAIN}"
    pre.data.num_examples = config.pretrain.num_examples
    pre.pipeline.batch_size = config.pretrain.batch_size
    pre.pipeline.max_prompts = config.pretrain.max_prompts
    pre.train.steps = config.pretrain.steps
    pre.train.checkpoint_every = max(config.pretrain.steps // 4, 1)
    pre.train.export = True  # the demo loads the pretrained SAM from model/
    pre.train.export_every = 0
    rate = config.pretrain.learning_rate
    pre.optimizer.learning_rates.sam = rate
    pre.optimizer.learning_rates.decoder = rate
    pre.optimizer.warmup_steps = max(config.pretrain.steps // 20, 1)
    return pre


def pretrained_sam(
    config: ml_collections.ConfigDict, cache_dir, *, progress: bool = True
) -> pathlib.Path:
    """The pretrained folder of the demo's SAM, trained into `cache_dir` unless cached there.

    Returns:
      The folder (a `mopeft_jax.load_pretrained` one) to use as `config.checkpoint`.
    """
    pre = pretrain_config(config)
    settings = {k: v for k, v in pre.to_dict().items() if k not in _NOT_KEY}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    run_dir = pathlib.Path(cache_dir).expanduser() / f"pretrained_sam_{key[:12]}"
    export = run_dir / RUN_EXPORT
    if (export / METADATA_FILE).is_file():
        step = json.loads((export / METADATA_FILE).read_text()).get("step")
        if step == pre.train.steps:
            print(f"Using the pretrained SAM cached in {run_dir}")
            return export
    print(f"Pretraining a small SAM on the '{SOURCE_DOMAIN}' domain ({pre.train.steps} steps) ...")
    train(pre, run_dir, progress=progress)
    return export
