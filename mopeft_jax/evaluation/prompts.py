"""Oracle prompts for evaluating SAM as MESS does.

Protocol (docs/evaluation.md; checked against blumenstiel/SAM-MESS ``model/visual_prompts.py``,
``model/sam_model.py``, ``default_config.yaml``):

1. the label is resized with nearest-neighbour interpolation so that its longest side is 1024,
   like the image (:func:`mopeft_jax.preprocessing.resize_label_longest_side`);
2. one prompt per 4-connected segment of every label value but the ignore label, background
   included, of at least 10 pixels, at most 100 per image, largest first
   (:func:`mopeft_jax.segments.segment_prompts`);
3. an image without any such segment gets one dummy prompt of class 0 so the model always has an
   input. The dummy prompts are those of SAM-MESS: the point ``(0, 0)`` (``generate_clicks``) and
   the box ``(0, 0, 1, 1)`` (``generate_boxes``), i.e. the top-left pixel.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from mopeft_jax.segments import (
    IGNORE_LABEL,
    IgnoreLabel,
    check_label,
    check_prompt_kind,
    segment_prompts,
)

__all__ = ["DUMMY_BOX", "DUMMY_POINT", "DUMMY_CLASS", "oracle_prompts"]

#: The prompt given to an image without any segment (as SAM-MESS): the top-left pixel.
DUMMY_POINT = (0, 0)
DUMMY_BOX = (0, 0, 1, 1)
DUMMY_CLASS = 0


def oracle_prompts(
    label,
    kind: str,
    *,
    ignore_label: IgnoreLabel = IGNORE_LABEL,
    min_pixels: int = 10,
    max_prompts: Optional[int] = 100,
    seed: int = 42,
) -> Tuple[np.ndarray, np.ndarray]:
    """MESS oracle prompts: one per 4-connected segment, largest first.

    ``label`` must already be at the scale of the model input frame (for MESS: resized with
    :func:`mopeft_jax.preprocessing.resize_label_longest_side`); the prompts are integer pixel
    indices of it (SAM's
    prompt encoder adds the half-pixel shift itself).

    Args:
        label: ``(H, W)`` integer label map.
        kind: ``"box"`` or ``"point"``.
        ignore_label: label value(s) never prompted (int, sequence of ints, or None).
        min_pixels: minimum segment size in pixels (segments with fewer are skipped).
        max_prompts: at most this many prompts, the largest segments; None for no cap.
        seed: seed of the ``numpy.random.default_rng`` that draws the point of each segment
            (the same label and seed always give the same points; boxes ignore it).

    Returns:
        ``(prompts, classes)``: for ``"box"`` prompts ``(N, 4)`` int64 ``x0, y0, x1, y1``
        (``cv2.boundingRect`` semantics: ``x1 = max column + 1``, ``y1 = max row + 1``); for
        ``"point"`` ``(N, 2)`` int64 ``x, y`` (x the column), one positive point per segment
        where the L2 distance transform of the zero-padded segment exceeds its max / 1.7;
        ``classes`` ``(N,)`` int64. ``N >= 1``: without any segment the result is the dummy
        prompt (:data:`DUMMY_BOX` or :data:`DUMMY_POINT`) with class :data:`DUMMY_CLASS`.

    Raises:
        ValueError: if ``kind`` is not ``"box"``/``"point"`` or ``label`` is not a 2-D integer
            array.
    """
    kind = check_prompt_kind(kind)
    label = check_label(label)
    rng = np.random.default_rng(seed)
    prompts, classes = segment_prompts(
        label,
        kind,
        rng,
        ignore_label=ignore_label,
        min_pixels=min_pixels,
        max_prompts=max_prompts,
    )
    if len(prompts) == 0:
        dummy = DUMMY_BOX if kind == "box" else DUMMY_POINT
        prompts = np.array([dummy], dtype=np.int64)
        classes = np.array([DUMMY_CLASS], dtype=np.int64)
    return prompts, classes
