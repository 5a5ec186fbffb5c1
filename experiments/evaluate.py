"""Evaluate a SAM checkpoint as MESS does (oracle prompts, dataset-level mIoU; SPEC section 6).

    python -m experiments.evaluate --checkpoint ckpt/sam_vit_b \\
        --dataset mess:bdd100k mess:paxray_lungs --data-dir ~/tensorflow_datasets \\
        --prompt box --output results.jsonl
    python -m experiments.evaluate --checkpoint ckpt/tiny --dataset synthetic:color_shift \\
        --max-images 32

``--checkpoint`` is a folder written by ``mopeft_jax.save_pretrained`` (or
``python -m weights_convert``); a config with PEFT layers is evaluated with them. Datasets are
``synthetic:<domain>`` (a procedurally generated domain, ``mopeft_jax.data.DOMAINS``) or
``mess:<name>`` (a prepared MESS builder, ``mopeft_jax.data.mess.REGISTRY``), evaluated on
MESS's evaluation split unless ``--split`` says otherwise. Prints a markdown table (per dataset,
per domain, overall mean; PAXRay-4 as the mean of its four binary datasets) and appends one JSON
line per dataset to ``--output``. Errors about missing data or checkpoints are one line on
stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys
from typing import Any, Callable, List, Optional, Sequence

from experiments.mess_eval import evaluate_source, results_table
from mopeft_jax import Sam, load_pretrained
from mopeft_jax.data import synthetic
from mopeft_jax.host_memory import retain_freed_memory

SYNTHETIC = "synthetic"
MESS = "mess"
SYNTHETIC_DOMAIN = "Synthetic"
SYNTHETIC_SPLIT = "val"


class DatasetError(Exception):
    """A dataset argument that names nothing (reported as one line, exit status 1)."""


@dataclasses.dataclass
class Dataset:
    """One dataset to evaluate: a random-access source and its metadata."""

    arg: str  # as given on the command line, e.g. "mess:bdd100k"
    name: str  # the table's name: the MESS registry name or "synthetic:<domain>"
    domain: str
    split: str
    source: Any
    class_names: tuple
    background_class: Optional[int]
    ignore_label: int


def _synthetic(domain: str, args) -> Dataset:
    if domain not in synthetic.DOMAINS:
        raise DatasetError(
            f"unknown synthetic domain {domain!r}; known: {', '.join(sorted(synthetic.DOMAINS))}"
        )
    split = args.split or SYNTHETIC_SPLIT
    spec = synthetic.DOMAINS[domain]
    source = synthetic.SyntheticSegmentation(
        domain,
        split,
        num_examples=args.synthetic_examples,
        image_size=args.synthetic_image_size,
        seed=args.synthetic_seed,
    )
    return Dataset(
        f"{SYNTHETIC}:{domain}",
        f"{SYNTHETIC}:{domain}",
        SYNTHETIC_DOMAIN,
        split,
        source,
        tuple(spec.class_names),
        spec.background_class,
        spec.ignore_label,
    )


def _mess(name: str, args) -> Dataset:
    # Imported here: it pulls in tensorflow_datasets, which synthetic runs do not need.
    from mopeft_jax.data import mess  # pylint: disable=g-import-not-at-top

    try:
        spec = mess.get_spec(name)
    except KeyError:
        raise DatasetError(
            f"unknown MESS dataset {name!r}; known: {', '.join(sorted(mess.REGISTRY))}"
        ) from None
    data_dir = args.data_dir
    # tfds would create a mistyped folder and try to build the dataset in it: refuse early.
    if data_dir is not None and not pathlib.Path(data_dir).expanduser().is_dir():
        raise FileNotFoundError(
            f"mess:{spec.name}: the data directory {data_dir} does not exist; prepare the dataset "
            f"first with mopeft_jax.data.mess.build({spec.name!r}, manual_dir=..., "
            f"data_dir={str(data_dir)!r})"
        )
    split = args.split or spec.eval_split
    source = mess.data_source(
        spec.name, split, None if data_dir is None else pathlib.Path(data_dir).expanduser()
    )
    return Dataset(
        f"{MESS}:{spec.name}",
        spec.name,
        spec.domain,
        split,
        source,
        tuple(spec.classes),
        spec.background_class,
        mess.IGNORE_LABEL,
    )


LOADERS: dict[str, Callable[[str, Any], Dataset]] = {SYNTHETIC: _synthetic, MESS: _mess}


def load_dataset(arg: str, args) -> Dataset:
    """``synthetic:<domain>`` or ``mess:<name>`` -> a :class:`Dataset`."""
    kind, sep, name = arg.partition(":")
    if not sep or kind not in LOADERS or not name:
        raise DatasetError(f"--dataset {arg!r}: expected synthetic:<domain> or mess:<name>")
    return LOADERS[kind](name, args)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a mopeft_jax.save_pretrained folder")
    parser.add_argument(
        "--dataset",
        required=True,
        nargs="+",
        help="synthetic:<domain> or mess:<name>, one or more",
    )
    parser.add_argument("--data-dir", help="tfds data dir of the prepared MESS datasets")
    parser.add_argument(
        "--split", help=f"split (default: MESS's evaluation split; {SYNTHETIC_SPLIT} for synthetic)"
    )
    parser.add_argument("--prompt", choices=("box", "point"), default="box")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--output", help="append one JSON line per dataset to this file")
    parser.add_argument(
        "--prompt-bucket", type=int, default=100, help="prompts decoded per call (padded)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the oracle points")
    parser.add_argument("--synthetic-examples", type=int, default=64, help="synthetic only")
    parser.add_argument(
        "--synthetic-image-size", type=int, default=128, help="synthetic only: image side"
    )
    parser.add_argument("--synthetic-seed", type=int, default=0, help="synthetic only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (the MESS errors list the expected files on several)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def run(args: argparse.Namespace) -> str:
    """Evaluates every dataset of ``args``; returns the results table."""
    # Resolve every dataset before loading the model, so missing data fails fast.
    datasets: List[Dataset] = [load_dataset(arg, args) for arg in args.dataset]
    config, params = load_pretrained(args.checkpoint)
    model = Sam(config)

    results, domains = {}, {}
    for ds in datasets:
        result = evaluate_source(
            model,
            params,
            ds.source,
            num_classes=len(ds.class_names),
            background_class=ds.background_class,
            ignore_label=ds.ignore_label,
            prompt_kind=args.prompt,
            max_images=args.max_images,
            prompt_bucket=args.prompt_bucket,
            seed=args.seed,
            progress=not args.no_progress,
            desc=ds.name,
        )
        results[ds.name], domains[ds.name] = result, ds.domain
        if args.output:
            record = {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "checkpoint": str(args.checkpoint),
                "dataset": ds.arg,
                "name": ds.name,
                "domain": ds.domain,
                "split": ds.split,
                "prompt": args.prompt,
                "max_images": args.max_images,
                "seed": args.seed,
                "class_names": list(ds.class_names),
                "background_class": ds.background_class,
                **result.to_json(),
            }
            output = pathlib.Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("a") as f:
                f.write(json.dumps(record) + "\n")
    return results_table(results, domains)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    retain_freed_memory()  # before the first computation; see mopeft_jax.host_memory
    try:
        table = run(args)
    except (FileNotFoundError, DatasetError) as error:
        # Missing data (the MESS builders' ManualDataError is a FileNotFoundError) or a missing
        # checkpoint: the message says what to do; a traceback would only bury it.
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
