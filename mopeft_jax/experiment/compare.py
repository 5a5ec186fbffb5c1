"""The paper's comparison: zero-shot SAM, each single PEFT, full fine-tuning and MoPEFT.

For every dataset in `config.compare.datasets` ("kind:name") and every method in
`config.compare.methods`, trains the method on the dataset's train split (resuming finished or
interrupted runs in WORKDIR/<dataset>/<method>) and evaluates it MESS-style on the evaluation
split. Writes WORKDIR/results.md and results.csv (mIoU per dataset and the mean, trainable
parameters, step time), results.jsonl, and PNG plots: gate values per block and dataset, loss
curves, predicted masks over images.

`config.compare.workers` methods run at once, in threads of this process (default 1). Each run
computes exactly what it computes alone, so the table is the same; only the seconds per step
are measured on a shared machine. On a 2-core CPU, two workers overlap one method's XLA
compilation with another's steps, and two tiny-SAM train steps at once ran 1.23x the
throughput of one after the other (2026-12-01).
"""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import dataclasses
import json
import pathlib
import threading
from typing import Dict, List

import jax
import ml_collections
import numpy as np

from mopeft_jax.evaluation.loop import compiled_functions, evaluate_dataset
from mopeft_jax.experiment import config as config_lib
from mopeft_jax.experiment import plots
from mopeft_jax.experiment.trainer import initial_params, train
from mopeft_jax.preprocessing import preprocess_image
from mopeft_jax.pretrained import RunModel
from mopeft_jax.sam.model import Sam

ZERO_SHOT = "zero_shot"
RESULT_FILES = ("results.jsonl", "results.md", "results.csv")
"""What a comparison writes in its folder besides the runs and plots."""
_SHOWN_IMAGES = 3  # evaluation images in each <dataset>/masks_<method>.png


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
    config: ml_collections.ConfigDict, workdir, *, progress: bool = True
) -> List[MethodResult]:
    """Trains and evaluates every (dataset, method) pair of `config.compare`.

    Args:
      config: an experiment config with a `compare` section (datasets, methods); the model
        to adapt is its `checkpoint` (or a random init of `model`).
      workdir: output folder; each run trains in WORKDIR/<dataset>/<method>.
      progress: show progress bars.

    Raises:
      The first error of a run; the other workers stop after the run they are in, and every
      finished or interrupted run resumes from its folder in the next call.
    """
    workdir = pathlib.Path(workdir)
    log_lock = threading.Lock()
    stop = threading.Event()  # set when a run fails: the other workers end after their run

    def run_method(method: str) -> Dict[tuple, MethodResult]:
        # Dataset by dataset: the runs of one method share its initial params and its
        # compiled train step (same shapes on every dataset).
        done = {}
        for name in config.compare.datasets:
            if stop.is_set():
                break
            run_config = copy.deepcopy(config)
            run_config.data.name = name
            if method != ZERO_SHOT:
                run_config.peft = method
            eval_set = config_lib.dataset(run_config, config.eval.split or None)
            run_dir = workdir / eval_set.info.name / method
            result = _run_one(run_config, method, eval_set, run_dir, progress)
            done[(name, method)] = result
            record = dataclasses.asdict(result)
            record.pop("history")
            with log_lock, open(workdir / "results.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
                print(f"{name:>24s} {method:>14s}: mIoU {100 * result.miou:6.2f}", flush=True)
        return done

    results = {}
    workers = int(config.compare.get("workers", 1))
    if workers < 1:
        raise ValueError(f"compare.workers is {workers}; use 1 (one method at a time) or more.")
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="compare") as pool:
        # Zero-shot trains nothing: submitted last, it fills the time one worker would wait
        # for the other's last method (cold demo, 2026-12-02: that tail was 28 s of one busy
        # worker).
        order = sorted(config.compare.methods, key=lambda method: method == ZERO_SHOT)
        futures = [pool.submit(run_method, method) for method in order]
        try:
            for future in futures:
                results.update(future.result())
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    results = [
        results[(name, method)]
        for name in config.compare.datasets
        for method in config.compare.methods
    ]
    write_tables(results, workdir, workers)
    plots.gate_plot(results, workdir / "gates.png")
    plots.loss_curves(results, workdir / "loss_curves.png")
    return results


def _run_one(config, method, eval_set, run_dir: pathlib.Path, progress) -> MethodResult:
    """Trains `method` (unless zero-shot) in `run_dir` and evaluates it on `eval_set`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if method == ZERO_SHOT:
        sam_config, base = config_lib.model_config(config)
        sam = RunModel(sam_config.replace(peft=None), "peft", base, config.train.seed)
        model, params = Sam(sam.sam_config), initial_params(sam)
        trainable, history, step_seconds = 0, [], float("nan")
    else:
        trained = train(config, run_dir, progress=progress)
        model, params = trained.model, trained.params
        trainable = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(trained.trainable))
        history, step_seconds = trained.history, trained.step_seconds
    info = eval_set.info
    shown = []  # (image, label, prediction) of the first few images, for the mask plot

    def keep_shown(index, example, prediction, label):
        if index < _SHOWN_IMAGES:
            shown.append((np.asarray(example["image"]), label, prediction))

    result = evaluate_dataset(
        model,
        params,
        eval_set,
        prompt_kind=config.eval.prompt,
        max_images=config.eval.max_images or None,
        prompt_bucket=config.eval.prompt_bucket,
        progress=progress,
        on_image=keep_shown,
    )
    gates = _mean_gates(model, params, eval_set.source) if _is_gated(model) else {}
    plots.mask_panels(
        shown, info.num_classes, run_dir.parent / f"masks_{method}.png", f"{info.name}: {method}"
    )
    return MethodResult(
        method,
        info.name,
        info.domain,
        float(result.miou),
        trainable,
        step_seconds,
        history,
        gates,
    )


def _is_gated(model: Sam) -> bool:
    return model.config.peft is not None and model.config.peft.gated


def _mean_gates(model: Sam, params, source, num_images: int = 4) -> Dict[str, float]:
    """Gate values averaged over a few evaluation images (the evaluation's own compiled
    encoder computes them)."""
    cfg = model.config
    encode = compiled_functions(model).encode
    per_image = [
        encode(
            params,
            preprocess_image(source[i]["image"], cfg.image_size, cfg.pixel_mean, cfg.pixel_std)[0],
        )[1]
        for i in range(min(num_images, len(source)))
    ]
    return {name: float(np.mean([g[name] for g in per_image])) for name in per_image[0]}


def write_tables(results: List[MethodResult], workdir: pathlib.Path, workers: int = 1) -> str:
    """results.md (mIoU per dataset, domain and mean; params; step time) and results.csv.

    `workers`: how many methods ran at once, which the step times of results.md name.
    """
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
    if workers > 1:
        table += (
            f"\ns / step: the median train step with {workers} methods running at once "
            "(compare.workers); set it to 1 to time each method alone.\n"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.md").write_text(table)
    with open(workdir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return table
