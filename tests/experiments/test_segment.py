"""`python -m experiments.segment`: masks as PNGs and an overlay from points, boxes or --auto."""

import json

import jax
import numpy as np
import pytest
from PIL import Image
from sam_configs import MINIMAL

from experiments import segment
from mopeft_jax import Sam, SamPredictor, save_pretrained
from mopeft_jax.inference import overlay_masks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model") / "sam"
    save_pretrained(directory, MINIMAL, Sam(MINIMAL).init_params(jax.random.key(0)))
    return directory


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_points_give_the_predictors_masks_as_pngs_and_an_overlay(model_dir, image_path, tmp_path):
    out = tmp_path / "out"
    argv = [f"--checkpoint={model_dir}", f"--image={image_path}", f"--output_dir={out}"]
    assert segment.main(argv + ["--point=20,10", "--point=40,30,0"]) == 0
    predictor = SamPredictor.from_pretrained(model_dir)
    image = np.asarray(Image.open(image_path))
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        np.array([[20.0, 10.0], [40.0, 30.0]]), np.array([1, 0]), multimask_output=False
    )
    written = sorted(out.glob("mask_*.png"))
    assert [p.name for p in written] == ["mask_0.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])) == 255, masks[0])
    records = json.loads((out / "masks.json").read_text())
    assert records[0]["score"] == pytest.approx(float(scores[0]))
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "overlay.png")), overlay_masks(image, masks)
    )


def test_boxes_give_one_mask_each_and_auto_runs(model_dir, image_path, tmp_path):
    argv = [f"--checkpoint={model_dir}", f"--image={image_path}"]
    assert (
        segment.main(
            argv + ["--box=5,5,30,30", "--box=10,20,50,40", f"--output_dir={tmp_path / 'b'}"]
        )
        == 0
    )
    assert len(list((tmp_path / "b").glob("mask_*.png"))) == 2
    auto = [f"--output_dir={tmp_path / 'a'}", "--auto", "--points_per_side=2"]
    assert segment.main(argv + auto) == 0
    assert (tmp_path / "a" / "overlay.png").is_file()
    records = json.loads((tmp_path / "a" / "masks.json").read_text())
    assert len(records) == len(list((tmp_path / "a").glob("mask_*.png")))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--point=1,2,3,4"], "--point '1,2,3,4': expected 2 or 3 numbers"),
        (["--box=1,2,nan,4"], "--box '1,2,nan,4': expected 4 numbers"),
        ([], "give prompts (--point, --box) or --auto"),
        (["--auto", "--point=1,2"], "give prompts (--point, --box) or --auto"),
        (["--box=10,10,5,30"], "box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0"),
    ],
)
def test_bad_prompts_are_one_line(model_dir, image_path, capsys, args, message):
    assert segment.main([f"--checkpoint={model_dir}", f"--image={image_path}", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_checkpoint_and_unreadable_image_are_one_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert segment.main([f"--checkpoint={model_dir}", f"--image={bad}", "--point=1,1"]) == 1
    assert f"--image {bad}: cannot read this image" in capsys.readouterr().err
    assert segment.main([f"--checkpoint={tmp_path}", f"--image={bad}", "--point=1,1"]) == 1
    assert "cannot read this image" in capsys.readouterr().err  # the image is checked first
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    assert (
        segment.main([f"--checkpoint={tmp_path / 'none'}", f"--image={good}", "--point=1,1"]) == 1
    )
    assert "is not a mopeft-jax checkpoint" in capsys.readouterr().err
