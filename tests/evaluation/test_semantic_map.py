"""Tests of mopeft_jax.evaluation.semantic_map (docs/evaluation.md, SAM-MESS's instance->semantic rule)."""

import numpy as np
import pytest

from mopeft_jax.evaluation import semantic_map


def _reference(mask_logits, classes, num_classes, background_class):
    """A literal numpy transcription of the rule as SAM-MESS states it.

    K + 1 zero channels; channel c = max over the prompts of class c; where the max over all
    channels is <= 0 the background channel (clipped to the extra channel K when it is larger
    than K) is set to 1; drop the extra channel; argmax with first-index ties.
    """
    bg = (
        num_classes
        if background_class is None or background_class > num_classes
        else background_class
    )
    h, w = mask_logits.shape[1:]
    r = np.zeros((num_classes + 1, h, w), dtype=np.float64)
    for c in np.unique(classes):
        r[c] = mask_logits[classes == c].max(axis=0)
    r[bg, r.max(axis=0) <= 0] = 1.0
    return np.argmax(r[:-1], axis=0)  # np.argmax, like torch.argmax, returns the first maximum


def test_hand_example_background_0():
    # 3 classes, background 0; prompts: two of class 1, one of class 2, on a 2 x 3 map
    logits = np.array(
        [
            [[2.0, -1.0, -3.0], [0.5, -2.0, -0.1]],  # class 1
            [[-1.0, 3.0, -3.0], [0.2, -2.0, -0.2]],  # class 1
            [[1.0, 1.0, -1.0], [0.7, -0.5, 0.0]],  # class 2
        ]
    )
    classes = np.array([1, 1, 2])
    # class 1 max: [[2, 3, -3], [0.5, -2, -0.1]]; class 2: [[1, 1, -1], [0.7, -0.5, 0]]
    # (0,0): 2 > 1 -> 1; (0,1): 3 -> 1; (0,2): all <= 0 -> bg 0
    # (1,0): 0.7 > 0.5 -> 2; (1,1): all <= 0 -> 0; (1,2): max 0 (class 2) is <= 0 -> 0
    expected = np.array([[1, 1, 0], [2, 0, 0]])
    np.testing.assert_array_equal(semantic_map(logits, classes, 3, 0), expected)
    np.testing.assert_array_equal(_reference(logits, classes, 3, 0), expected)


def test_background_class_not_zero():
    logits = np.array([[[-1.0, 2.0]], [[-0.5, 1.0]]])
    classes = np.array([0, 1])
    # num_classes 4, background 3 (unprompted): pixel 0 has no positive logit -> 3;
    # pixel 1: class 0 has 2 > 1 -> 0.
    np.testing.assert_array_equal(semantic_map(logits, classes, 4, 3), [[3, 0]])


def test_positive_logit_beats_unprompted_classes_and_ties_go_to_lower_index():
    logits = np.array([[[0.25, 1.0]], [[0.25, 2.0]]])
    classes = np.array([3, 2])
    # pixel 0: classes 2 and 3 tie at 0.25 > 0 -> the lower index, 2;
    # the unprompted classes 0 and 1 score 0 and cannot win where something is positive.
    np.testing.assert_array_equal(semantic_map(logits, classes, 5, 0), [[2, 2]])


@pytest.mark.parametrize("background", [None, 255, 4])
def test_no_background_class(background):
    # MESS registers background_class=255 for datasets without one (ATLANTIS, BDD100K); SAM-MESS
    # then sets the dropped extra channel, and the argmax of the remaining all-<=0 scores picks
    # the lowest-index class without a prompt (score 0).
    logits = np.array([[[-1.0, 0.5]], [[-2.0, -3.0]]])
    classes = np.array([0, 2])
    np.testing.assert_array_equal(semantic_map(logits, classes, 4, background), [[1, 0]])
    # every class prompted: the least negative logit wins
    logits = np.array([[[-1.0, -4.0]], [[-2.0, -3.0]]])
    classes = np.array([0, 1])
    np.testing.assert_array_equal(semantic_map(logits, classes, 2, background), [[0, 1]])


def test_max_over_prompts_of_a_class():
    logits = np.array([[[5.0, -1.0]], [[-1.0, 4.0]], [[3.0, 3.0]]])
    classes = np.array([1, 1, 2])
    # class 1 max = [5, 4] beats class 2 = [3, 3] everywhere
    np.testing.assert_array_equal(semantic_map(logits, classes, 3, 0), [[1, 1]])


def test_matches_literal_transcription_on_random_inputs():
    rng = np.random.default_rng(0)
    for trial in range(200):
        k = int(rng.integers(1, 7))
        n = int(rng.integers(0, 6))
        logits = rng.normal(size=(n, 5, 7)).round(1)  # rounding makes ties and zeros frequent
        classes = rng.integers(0, k, size=n)
        background = [None, 255, int(rng.integers(0, k))][trial % 3]
        ours = semantic_map(logits, classes, k, background)
        np.testing.assert_array_equal(ours, _reference(logits, classes, k, background))
        assert ours.dtype == np.int64 and ours.shape == (5, 7)


def test_errors():
    logits = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match=r"mask_logits must be \(N, H, W\)"):
        semantic_map(logits[0], [0], 2, 0)
    with pytest.raises(
        ValueError, match=r"classes must be \(N,\) with N = mask_logits.shape\[0\] = 2"
    ):
        semantic_map(logits, [0], 2, 0)
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 2\), got \[5\]"):
        semantic_map(logits, [0, 5], 2, 0)
    with pytest.raises(ValueError, match="background_class must be >= 0"):
        semantic_map(logits, [0, 1], 2, -1)
