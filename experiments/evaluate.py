"""Evaluate a model as MESS does (oracle prompts, dataset-level mIoU; docs/evaluation.md).

    python -m experiments.evaluate --checkpoint checkpoints/sam_vit_b \\
        --dataset mess:bdd100k,mess:paxray_lungs --data_dir ~/tensorflow_datasets \\
        --prompt box --output results.jsonl
    python -m experiments.evaluate --checkpoint runs/x --dataset folder:my_data --data_dir ~/tfds
    python -m experiments.evaluate --checkpoint runs/x --step 200 --dataset synthetic:color_shift

`--checkpoint` is a pretrained folder (`python -m weights_convert`), a training run's folder
(its final model, or the latest step), or a step of one; a model with PEFT layers is evaluated
with them. `--dataset` takes any dataset training reads ("kind:name": synthetic:, mess:,
folder:), comma-separated, each on its evaluation split unless `--split` says otherwise. Prints a
markdown table (per dataset, per domain, overall mean; PAXRay-4 as the mean of its four binary
datasets) and appends one JSON line per dataset to `--output`.
"""

import datetime
import json
import pathlib
import sys

from absl import flags

from mopeft_jax import Sam, load_pretrained
from mopeft_jax.data import load_dataset
from mopeft_jax.evaluation.loop import evaluate_dataset, results_table
from mopeft_jax.experiment import cli

_DATASETS = flags.DEFINE_list("dataset", None, "datasets as kind:name, comma-separated")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir of prepared mess:/folder: data")
_SPLIT = flags.DEFINE_string("split", None, "split (default: each dataset's evaluation split)")
_PROMPT = flags.DEFINE_enum("prompt", "box", ["box", "point"], "the oracle prompts")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "mess", ["mess", "detectron2"], "mIoU rule (MESS's evaluator by default)"
)
_MAX_IMAGES = flags.DEFINE_integer("max_images", None, "evaluate the first N images only")
_OUTPUT = flags.DEFINE_string("output", None, "append one JSON line per dataset to this file")
_BUCKET = flags.DEFINE_integer("prompt_bucket", 100, "the most prompts decoded per call")
_SEED = flags.DEFINE_integer("seed", 42, "seed of the oracle points")
_SYNTHETIC_EXAMPLES = flags.DEFINE_integer("synthetic_examples", 64, "synthetic: images")
_SYNTHETIC_SIZE = flags.DEFINE_integer("synthetic_image_size", 128, "synthetic: image side")
_SYNTHETIC_SEED = flags.DEFINE_integer("synthetic_seed", 0, "synthetic: dataset seed")


def run() -> int:
    cli.require(cli.CHECKPOINT, _DATASETS)
    # Every dataset is resolved before the model loads, so missing data fails fast.
    datasets = [
        load_dataset(
            name,
            _SPLIT.value,
            data_dir=_DATA_DIR.value,
            num_examples=_SYNTHETIC_EXAMPLES.value,
            image_size=_SYNTHETIC_SIZE.value,
            seed=_SYNTHETIC_SEED.value,
        )
        for name in _DATASETS.value
    ]
    config, params = load_pretrained(cli.CHECKPOINT.value, step=cli.STEP.value)
    model = Sam(config)
    results, domains = {}, {}
    for dataset in datasets:
        result = evaluate_dataset(
            model,
            params,
            dataset,
            prompt_kind=_PROMPT.value,
            max_images=_MAX_IMAGES.value,
            prompt_bucket=_BUCKET.value,
            seed=_SEED.value,
            protocol=_PROTOCOL.value,
            progress=cli.PROGRESS.value,
        )
        results[dataset.name], domains[dataset.name] = result, dataset.info.domain
        if _OUTPUT.value:
            _append(pathlib.Path(_OUTPUT.value).expanduser(), dataset, result)
    print(results_table(results, domains))
    return 0


def _append(output: pathlib.Path, dataset, result) -> None:
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "checkpoint": str(cli.CHECKPOINT.value),
        "step": cli.STEP.value,
        "dataset": dataset.spec,
        "name": dataset.name,
        "domain": dataset.info.domain,
        "split": dataset.split,
        "prompt": _PROMPT.value,
        "max_images": _MAX_IMAGES.value,
        "seed": _SEED.value,
        "class_names": list(dataset.info.class_names),
        "background_class": dataset.info.background_class,
        **result.to_json(),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv=None) -> int:
    """The command with `argv` (default sys.argv[1:]); returns the exit status."""
    return cli.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
