"""From per-prompt mask logits to a semantic class map, as SAM-MESS does.

Rule (blumenstiel/SAM-MESS ``model/sam_model.py``, ``SAM.forward``, followed by the argmax of
the MESS/detectron2 evaluator):

* a score map per class, ``K + 1`` channels (the last an extra "ignore" channel), all 0;
* for every class that has prompts, its channel is the per-pixel maximum of the mask logits of
  its prompts (the first multimask output, unbinarised, at label size); classes without a prompt
  stay at 0;
* where the maximum over all channels is ``<= 0`` (i.e. no prompted class has a positive logit),
  the background channel is set to 1;
* the extra channel is dropped and the class is the per-pixel argmax; ties go to the lowest
  class index (``torch.argmax`` returns the first maximal index).

Consequences reproduced here: where some class has a positive logit, the argmax runs over all
classes, and unprompted classes (score 0) can never win there. Where no class is positive, the
background class wins, unless the dataset has none (MESS ATLANTIS and BDD100K register
``background_class=255``; SAM-MESS then points it at the dropped extra channel): there the
argmax over scores that are all ``<= 0`` picks the lowest-index class without a prompt (score 0),
or, if every class has a prompt, the class with the largest (least negative) logit.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["semantic_map"]


def semantic_map(
    mask_logits,
    classes,
    num_classes: int,
    background_class: Optional[int] = 0,
) -> np.ndarray:
    """Per-pixel class map from the mask logits of class-labelled prompts.

    Args:
        mask_logits: ``(N, H, W)`` float mask logits, one per prompt, already upscaled to the
            label size and not binarised (for SAM: the first of the three multimask outputs).
        classes: ``(N,)`` int, the class of each prompt, each in ``[0, num_classes)``.
        num_classes: ``K``, the number of classes of the dataset.
        background_class: the class that takes the pixels where no class has a positive logit.
            None, or any value ``>= num_classes`` (e.g. 255 as MESS registers it for datasets
            without a background class), means "no background class" (see the module docstring).

    Returns:
        ``(H, W)`` int64 class map with values in ``[0, num_classes)``.

    Raises:
        ValueError: on shape mismatches, ``num_classes < 1``, a negative ``background_class``,
            or a class outside ``[0, num_classes)``.
    """
    logits = np.asarray(mask_logits)
    classes = np.asarray(classes)
    if logits.ndim != 3:
        raise ValueError(f"mask_logits must be (N, H, W), got shape {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float32)
    if classes.ndim != 1 or classes.shape[0] != logits.shape[0]:
        raise ValueError(
            f"classes must be (N,) with N = mask_logits.shape[0] = {logits.shape[0]}, "
            f"got shape {classes.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integers, got dtype {classes.dtype}")
    classes = classes.astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        bad = np.unique(classes[(classes < 0) | (classes >= num_classes)])
        raise ValueError(f"classes must lie in [0, {num_classes}), got {bad.tolist()}")
    if background_class is not None and background_class < 0:
        raise ValueError(f"background_class must be >= 0 or None, got {background_class}")
    has_background = background_class is not None and background_class < num_classes

    height, width = logits.shape[1:]
    prompted = np.unique(classes)
    # Channels that can matter, in increasing class order: every prompted class plus, if any
    # class has no prompt, the lowest unprompted class, standing for all of them (score 0;
    # the argmax tie rule makes the lowest index the only one that can win).
    unprompted = np.setdiff1d(np.arange(num_classes), prompted)
    channel_classes = prompted
    if unprompted.size:
        channel_classes = np.sort(np.append(prompted, unprompted[0]))
    scores = np.zeros((len(channel_classes), height, width), dtype=logits.dtype)
    for j, c in enumerate(channel_classes):
        members = classes == c
        if members.any():
            scores[j] = logits[members].max(axis=0)

    result = channel_classes[np.argmax(scores, axis=0)].astype(np.int64)
    if has_background:
        no_positive = scores.max(axis=0) <= 0
        result[no_positive] = background_class
    return result
