"""The references of the inference tests: the official `segment_anything` predictor and mask
generator without torchvision, converted random models, images, and a fine-tuned (PEFT) model.

torchvision does not import here (`weights_convert.official` registers stand-ins that raise), so
`patch_torchvision` (applied by tests/inference/conftest.py) swaps the four torchvision functions
that segment_anything calls for equivalents:
  * `resize` of a PIL image to ``(h, w)`` is ``PIL.Image.resize((w, h), BILINEAR)`` and
    `to_pil_image` of an HWC uint8 array is ``Image.fromarray`` (torchvision's own code paths);
  * `batched_nms` and `box_area` are the plain-torch versions below (torchvision's semantics).
"""

import functools

import flax
import jax
import numpy as np
import torch
from PIL import Image
from segment_anything import automatic_mask_generator as official_amg
from segment_anything.utils import transforms as official_transforms

from mopeft_jax import Sam
from mopeft_jax.peft import preset
from weights_convert import load_pytorch_checkpoint
from weights_convert.official import build_official_sam


def resize(image: Image.Image, size) -> Image.Image:
    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's `batched_nms` for one category: greedy by stable decreasing score, an IoU
    (float32) strictly above the threshold suppresses."""
    assert bool(torch.all(idxs == 0)), "the official generator passes category 0 only"
    order = torch.sort(scores, descending=True, stable=True).indices
    x0, y0, x1, y1 = boxes.float().unbind(1)
    areas = (x1 - x0) * (y1 - y0)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x1[i], x1) - torch.maximum(x0[i], x0)).clamp(min=0)
        h = (torch.minimum(y1[i], y1) - torch.maximum(y0[i], y0)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou.double() > iou_threshold
    return torch.as_tensor(keep, dtype=torch.long)


@functools.lru_cache(maxsize=None)
def converted(config, seed: int = 0):
    """(official model with every tensor random, our config, our params) for `config`."""
    reference = build_official_sam(config, seed)
    ours, params = load_pytorch_checkpoint(
        reference.state_dict(), decoder_num_heads=config.decoder_num_heads
    )
    assert ours == config
    return reference, ours, params


def random_image(height: int, width: int, seed: int = 0, noise: int = 60) -> np.ndarray:
    """A uint8 RGB image of uniform discs over uniform noise in [0, noise)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[:height, :width]
    image = rng.randint(0, noise, (height, width, 3)).astype(np.float64)
    for _ in range(6):
        cy, cx = rng.rand(2) * (height, width)
        radius = rng.uniform(0.1, 0.35) * min(height, width)
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] += rng.randint(60, 190, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def randomized_peft_params(config, params):
    """SAM's params with MoPEFT layers whose own leaves are random, so that they matter."""
    peft_config = config.replace(peft=preset("mopeft"))
    full = Sam(peft_config).init_params(jax.random.key(3), pretrained=params)
    flat = flax.traverse_util.flatten_dict(full)
    plain = flax.traverse_util.flatten_dict(params)
    rng = np.random.RandomState(4)
    for path in set(flat) - set(plain):
        flat[path] = flat[path] + rng.randn(*flat[path].shape).astype(np.float32) * 0.5
    return peft_config, flax.traverse_util.unflatten_dict(flat)


def patch_torchvision(patch) -> None:
    """Points segment_anything's torchvision calls at the functions above."""
    patch.setattr(official_transforms, "resize", resize)
    patch.setattr(official_transforms, "to_pil_image", Image.fromarray)
    patch.setattr(official_amg, "batched_nms", batched_nms)
    patch.setattr(official_amg, "box_area", box_area)
