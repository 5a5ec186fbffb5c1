"""The paper's comparison: zero-shot SAM, each single PEFT, full fine-tuning and MoPEFT.

    python -m experiments.compare --config experiments/configs/synthetic_compare.py \\
        --workdir runs/compare

For every dataset in `config.compare.datasets` and every method in
`config.compare.methods`, trains the method on the dataset's train split (resuming
finished or interrupted runs from WORKDIR) and evaluates it MESS-style on the eval split.
Writes WORKDIR/results.md and results.csv (mIoU per dataset and domain, trainable
parameters, step time), results.jsonl, and PNG plots: gate values per block and dataset,
loss curves, predicted masks over images.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import json
import pathlib
import sys
from typing import Dict, List, Optional

import jax
import ml_collections
import numpy as np

from experiments import mess_eval, plots
from experiments.train import dataset, sam_config, train
from mopeft_jax import Sam
from mopeft_jax.host_memory import retain_freed_memory
from mopeft_jax.peft.gates import gate_values

ZERO_SHOT = "zero_shot"


@dataclasses.dataclass
class MethodResult:
    method: str
    dataset: str
    domain: str
    miou: float
    trainable: int
    step_seconds: float
    history: List[Dict[str, float]]
    gates: Dict[str, float]


def run_comparison(
    config: ml_collections.ConfigDict, workdir, *, params=None, progress: bool = True
) -> List[MethodResult]:
    """Trains and evaluates every (dataset, method) pair of `config.compare`.

    Args:
      config: an experiment config with a `compare` section (datasets, methods).
      workdir: output folder; each run trains in WORKDIR/<dataset>/<method>.
      params: plain SAM params to adapt (e.g. pretrained in this process); else the
        config's checkpoint (or a random init).
    """
    workdir = pathlib.Path(workdir)
    results = []
    for name in config.compare.datasets:
        for method in config.compare.methods:
            run_config = copy.deepcopy(config)
            run_config.data.name = name
            if method != ZERO_SHOT:
                run_config.peft = method
            result = _run_one(run_config, method, workdir / name / method, params, progress)
            results.append(result)
            with open(workdir / "results.jsonl", "a") as f:
                record = dataclasses.asdict(result)
                record.pop("history")
                f.write(json.dumps(record) + "\n")
            print(f"{name:>15s} {method:>14s}: mIoU {100 * result.miou:6.2f}", flush=True)
    write_tables(results, workdir)
    plots.gate_plot(results, workdir / "gates.png")
    plots.loss_curves(results, workdir / "loss_curves.png")
    return results


def _run_one(config, method, workdir, params, progress) -> MethodResult:
    workdir.mkdir(parents=True, exist_ok=True)
    eval_source, info = dataset(config, config.eval.split)
    if method == ZERO_SHOT:
        model_config, pretrained = sam_config(config)
        model = Sam(model_config.replace(peft=None))
        full = (
            params
            if params is not None
            else (pretrained if pretrained is not None else model.init_params(jax.random.key(0)))
        )
        trainable, history, step_seconds = 0, [], float("nan")
    else:
        trained = train(config, workdir, progress=progress, params=params)
        model, full = trained.model, trained.params
        trainable = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(trained.trainable))
        history, step_seconds = trained.history, trained.step_seconds
    result = mess_eval.evaluate_source(
        model,
        full,
        eval_source,
        num_classes=info.num_classes,
        background_class=info.background_class,
        ignore_label=info.ignore_label,
        prompt_kind=config.eval.prompt,
        max_images=config.eval.max_images,
        progress=progress,
    )
    gates = _mean_gates(model, full, eval_source) if _is_gated(model) else {}
    plots.mask_overlay(model, full, eval_source, info, workdir.parent / f"masks_{method}.png")
    return MethodResult(
        method, info.name, info.domain, float(result.miou), trainable, step_seconds, history, gates
    )


def _is_gated(model: Sam) -> bool:
    return model.config.peft is not None and model.config.peft.gated


def _mean_gates(model: Sam, params, source, num_images: int = 4) -> Dict[str, float]:
    """Gate values averaged over a few evaluation images."""
    cfg = model.config
    images = np.stack(
        [
            mess_eval.preprocess_image(
                source[i]["image"], cfg.image_size, cfg.pixel_mean, cfg.pixel_std
            )[0]
            for i in range(min(num_images, len(source)))
        ]
    )
    return {name: float(np.mean(value)) for name, value in _gates_fn(model)(params, images).items()}


@functools.lru_cache(maxsize=8)
def _gates_fn(model: Sam):
    """Jitted (params, images) -> {gate name: (B,) values}, cached per model."""

    def gates(params, images):
        _, state = model.apply(
            {"params": params}, images, method=Sam.encode_image, mutable=["gates"]
        )
        return gate_values(state)

    return jax.jit(gates)


def write_tables(results: List[MethodResult], workdir: pathlib.Path) -> str:
    """results.md (mIoU per dataset, domain and mean; params; step time) and results.csv."""
    methods = list(dict.fromkeys(r.method for r in results))
    names = list(dict.fromkeys(r.dataset for r in results))
    by_key = {(r.method, r.dataset): r for r in results}
    header = ["method", *names, "mean", "trainable params", "s / step"]
    rows = []
    for method in methods:
        mious = [by_key[(method, n)].miou * 100 for n in names if (method, n) in by_key]
        first = next(r for r in results if r.method == method)
        rows.append(
            [
                method,
                *[f"{m:.2f}" for m in mious],
                f"{np.mean(mious):.2f}",
                f"{first.trainable:,}",
                "" if np.isnan(first.step_seconds) else f"{first.step_seconds:.3f}",
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "mIoU (%) per dataset, MESS protocol\n\n" + "\n".join(lines) + "\n"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.md").write_text(table)
    with open(workdir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return table


def main(argv) -> Optional[int]:
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    del argv
    flags_config = config_flags.DEFINE_config_file("config", None, "experiment config file")
    flags.DEFINE_string("workdir", None, "output folder")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        retain_freed_memory()  # before the first computation; see mopeft_jax.host_memory
        results = run_comparison(flags_config.value, flags.FLAGS.workdir)
        print((pathlib.Path(flags.FLAGS.workdir) / "results.md").read_text())
        return 0 if results else 1

    app.run(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
