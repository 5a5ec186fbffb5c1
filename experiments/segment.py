"""Segment one image with a model: prompts in the image's pixels, or automatic masks.

    python -m experiments.segment --checkpoint runs/my_data --image photo.jpg --point 120,80
    python -m experiments.segment --checkpoint checkpoints/sam_vit_b --image photo.jpg \\
        --box 30,40,300,260 --box 350,60,500,200
    python -m experiments.segment --checkpoint runs/my_data --step 500 --image photo.jpg --auto

`--checkpoint` is any model `mopeft_jax.load_pretrained` reads (a converted SAM, a training run's
folder, a step of one). Points are `x,y` (a positive click) or `x,y,0` (a negative one); all
points form one prompt, with the box if one box is given; several boxes are one prompt each.
Writes into `--output_dir`: `mask_<i>.png` (0/255) per mask, `overlay.png` (the masks over the
image, for a person to look at) and `masks.json` (scores, areas, boxes).
"""

import json
import pathlib
import sys
import time

import numpy as np
from absl import flags
from PIL import Image

from mopeft_jax import load_pretrained
from mopeft_jax.experiment import cli
from mopeft_jax.inference import AutomaticMaskGenerator, SamPredictor, overlay_masks

_IMAGE = flags.DEFINE_string("image", None, "the image to segment (any format PIL reads)")
_POINTS = flags.DEFINE_multi_string("point", [], "a point x,y (positive) or x,y,0 (negative)")
_BOXES = flags.DEFINE_multi_string("box", [], "a box x0,y0,x1,y1")
_AUTO = flags.DEFINE_bool("auto", False, "automatic masks over a grid of points instead")
_POINTS_PER_SIDE = flags.DEFINE_integer("points_per_side", 32, "--auto: the point grid's side")
_MULTIMASK = flags.DEFINE_bool(
    "multimask", None, "three candidate masks per prompt (default: for a single point only)"
)
_OUTPUT = flags.DEFINE_string("output_dir", "outputs/segment", "where the PNGs and masks.json go")


def parse_numbers(text: str, count, what: str) -> list:
    """`text` as comma-separated numbers, `count` of them (an int or a tuple of allowed counts)."""
    counts = (count,) if isinstance(count, int) else count
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(np.isfinite(values)):
        raise ValueError(f"--{what} {text!r}: expected {' or '.join(map(str, counts))} numbers")
    return values


def read_image(path: str) -> np.ndarray:
    """The image at `path` as (H, W, 3) uint8 RGB, or a one-line error naming it."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--image {path}: no such file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError) as error:
        raise ValueError(f"--image {path}: cannot read this image ({error})") from None


def run() -> int:
    cli.require(cli.CHECKPOINT, _IMAGE)
    if _AUTO.value == bool(_POINTS.value or _BOXES.value):
        raise ValueError("give prompts (--point, --box) or --auto, not both and not neither")
    points = [parse_numbers(p, (2, 3), "point") for p in _POINTS.value]
    boxes = [parse_numbers(b, 4, "box") for b in _BOXES.value]
    if points and len(boxes) > 1:
        raise ValueError("points go with at most one box: they form a single prompt")
    image = read_image(_IMAGE.value)
    output = pathlib.Path(_OUTPUT.value).expanduser()
    began = time.perf_counter()
    print(f"Loading {cli.CHECKPOINT.value} ...", flush=True)
    config, params = load_pretrained(cli.CHECKPOINT.value, step=cli.STEP.value)

    if _AUTO.value:
        print(f"Automatic masks ({_POINTS_PER_SIDE.value}^2 points) ...", flush=True)
        generator = AutomaticMaskGenerator(config, params, points_per_side=_POINTS_PER_SIDE.value)
        found = generator.generate(image)
        masks = (
            np.stack([m["segmentation"] for m in found])
            if found
            else np.zeros((0, *image.shape[:2]), bool)
        )
        records = [
            {k: m[k] for k in ("area", "bbox", "predicted_iou", "stability_score", "point_coords")}
            for m in found
        ]
    else:
        predictor = SamPredictor(config, params)
        print("Encoding the image ...", flush=True)
        predictor.set_image(image)
        multimask = (
            _MULTIMASK.value if _MULTIMASK.value is not None else (len(points) == 1 and not boxes)
        )
        if points or len(boxes) <= 1:
            coords = np.array([p[:2] for p in points]) if points else None
            labels = np.array([p[2] if len(p) == 3 else 1 for p in points]) if points else None
            box = np.array(boxes[0]) if boxes else None
            masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=multimask)
        else:
            masks, scores, _ = predictor.predict_batch(
                boxes=np.array(boxes), multimask_output=False
            )
            masks, scores = masks[:, 0], scores[:, 0]
        records = [{"score": float(s), "area": int(m.sum())} for m, s in zip(masks, scores)]

    output.mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(output / f"mask_{i}.png")
    Image.fromarray(overlay_masks(image, masks)).save(output / "overlay.png")
    (output / "masks.json").write_text(json.dumps(records, indent=2, default=float))
    print(
        f"{len(masks)} masks in {time.perf_counter() - began:.1f} s: {output}/mask_*.png, "
        f"{output}/overlay.png, {output}/masks.json"
    )
    return 0


def main(argv=None) -> int:
    """The command with `argv` (default sys.argv[1:]); returns the exit status."""
    return cli.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
