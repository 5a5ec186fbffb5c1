"""Tests of mopeft_jax.evaluation.prompts and .segments (docs/evaluation.md, oracle prompts)."""

import numpy as np
import pytest
from scipy import ndimage

from mopeft_jax.evaluation import (
    DUMMY_BOX,
    DUMMY_POINT,
    connected_segments,
    interior_candidates,
    longest_side_shape,
    oracle_prompts,
    resize_label_longest_side,
    segment_prompts,
)


def _label_three_rects():
    """12 x 16 map, background 0, three hand-drawn rectangles and an ignore patch."""
    label = np.zeros((12, 16), dtype=np.uint8)
    label[1:4, 2:7] = 1  # 3 x 5 = 15 px, rows 1..3, cols 2..6
    label[6:11, 9:15] = 2  # 5 x 6 = 30 px, rows 6..10, cols 9..14
    label[7:9, 1:7] = 1  # 2 x 6 = 12 px, rows 7..8, cols 1..6 (second segment of class 1)
    label[0:2, 12:16] = 255  # ignore
    return label


# ----------------------------------------------------------------------------- boxes


def test_boxes_on_hand_drawn_segments():
    label = _label_three_rects()
    prompts, classes = oracle_prompts(label, "box")
    background_size = 12 * 16 - 15 - 30 - 12 - 8  # = 127, one 4-connected piece
    assert background_size == 127
    # Largest first: background (127), class 2 (30), class 1 (15), class 1 (12).
    np.testing.assert_array_equal(classes, [0, 2, 1, 1])
    np.testing.assert_array_equal(
        prompts,
        [
            [0, 0, 16, 12],  # background touches every border
            [9, 6, 15, 11],  # x0 = min col, y0 = min row, x1 = max col + 1, y1 = max row + 1
            [2, 1, 7, 4],
            [1, 7, 7, 9],
        ],
    )
    assert prompts.dtype == np.int64 and classes.dtype == np.int64


def test_single_pixel_box_is_one_pixel_wide():
    label = np.zeros((5, 5), dtype=np.int32)
    label[3, 1] = 4
    prompts, classes = oracle_prompts(label, "box", min_pixels=1)
    # cv2.boundingRect of a single pixel: (x, y, 1, 1) -> (1, 3, 2, 4)
    np.testing.assert_array_equal(prompts[classes == 4], [[1, 3, 2, 4]])


# ------------------------------------------------------------- segments / connectivity


def test_diagonal_pixels_are_separate_segments_4_connectivity():
    label = np.zeros((4, 4), dtype=np.uint8)
    label[0, 0] = label[1, 1] = label[2, 2] = 1  # diagonal chain: 3 segments under 4-connectivity
    prompts, classes = oracle_prompts(label, "box", min_pixels=1)
    class1 = prompts[classes == 1]
    assert len(class1) == 3  # with 8-connectivity it would be a single segment
    assert ndimage.label(label == 1, structure=np.ones((3, 3)))[1] == 1  # 8-conn: one piece
    np.testing.assert_array_equal(
        sorted(map(tuple, class1)), [(0, 0, 1, 1), (1, 1, 2, 2), (2, 2, 3, 3)]
    )
    # the background (13 px) is one 4-connected segment since the diagonal does not cut it
    assert (classes == 0).sum() == 1


def test_min_pixels_filter_is_inclusive():
    label = np.zeros((10, 10), dtype=np.uint8)
    label[0:3, 0:3] = 1  # 9 px: dropped with the default min_pixels=10
    label[5:7, 5:10] = 2  # 10 px: kept
    _, classes = oracle_prompts(label, "box")
    assert set(classes.tolist()) == {0, 2}
    _, classes = oracle_prompts(label, "box", min_pixels=9)
    assert set(classes.tolist()) == {0, 1, 2}


def test_max_prompts_keeps_the_largest():
    label = np.full((20, 20), 255, dtype=np.uint8)
    sizes = {}
    # separate squares of class 1..6 with distinct sizes, separated by ignore pixels
    for c, (r, s) in enumerate([(0, 2), (0, 5), (7, 4), (7, 6), (14, 3), (14, 5)], start=1):
        col = 0 if c % 2 else 8
        label[r : r + s, col : col + s] = c
        sizes[c] = s * s
    prompts, classes = oracle_prompts(label, "box", min_pixels=1, max_prompts=3)
    expected = sorted(sizes, key=lambda c: -sizes[c])[:3]  # classes 4 (36), 2 (25), 6 (25)
    assert len(prompts) == 3
    assert sorted(classes.tolist()) == sorted(expected)
    assert [sizes[c] for c in classes] == sorted([sizes[c] for c in classes], reverse=True)


def test_ties_keep_class_then_raster_order():
    label = np.full((6, 9), 255, dtype=np.uint8)
    label[0:3, 6:9] = 1  # 9 px
    label[0:3, 0:3] = 2  # 9 px
    label[3:6, 0:3] = 1  # 9 px, class 1 second component in raster order
    _, classes = oracle_prompts(label, "box", min_pixels=1)
    segs = connected_segments(label, min_pixels=1)
    assert [(s.class_id, s.slices) for s in segs] == [
        (1, (slice(0, 3), slice(6, 9))),
        (1, (slice(3, 6), slice(0, 3))),
        (2, (slice(0, 3), slice(0, 3))),
    ]
    np.testing.assert_array_equal(classes, [1, 1, 2])


def test_ignore_label_is_never_prompted_and_background_is():
    label = _label_three_rects()
    for kind in ("box", "point"):
        prompts, classes = oracle_prompts(label, kind)
        assert 255 not in classes.tolist()
        assert 0 in classes.tolist()
    # a different ignore value and a list of them
    _, classes = oracle_prompts(label, "box", ignore_label=0, min_pixels=8)  # 255 patch: 8 px
    assert set(classes.tolist()) == {1, 2, 255}
    _, classes = oracle_prompts(label, "box", ignore_label=[0, 255])
    assert set(classes.tolist()) == {1, 2}


def test_segment_masks_are_the_components():
    label = _label_three_rects()
    for seg in connected_segments(label):
        full = seg.full_mask(label.shape)
        assert full.sum() == seg.size
        assert np.all(label[full] == seg.class_id)
        comps, _ = ndimage.label(label == seg.class_id)
        ids = np.unique(comps[full])
        assert len(ids) == 1 and np.array_equal(comps == ids[0], full)


# ---------------------------------------------------------------------------- points


def _independent_inner_region(seg_mask):
    dt = ndimage.distance_transform_edt(np.pad(seg_mask, 1))[1:-1, 1:-1]
    return dt > dt.max() / 1.7


def test_points_are_deterministic_inside_and_in_the_inner_region():
    rng = np.random.default_rng(123)
    noise = ndimage.gaussian_filter(rng.normal(size=(48, 64)), sigma=3)
    label = np.digitize(noise, np.quantile(noise, [0.33, 0.66])).astype(np.uint8)  # 3-class blobs
    label[:5, :5] = 255
    p1, c1 = oracle_prompts(label, "point", seed=7)
    p2, c2 = oracle_prompts(label, "point", seed=7)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)
    boxes, cb = oracle_prompts(label, "box", seed=7)
    np.testing.assert_array_equal(cb, c1)
    assert len(p1) > 3 and p1.shape == (len(c1), 2)
    segs = connected_segments(label)
    for (x, y), c, seg in zip(p1, c1, segs):
        full = seg.full_mask(label.shape)
        assert label[y, x] == c and full[y, x]  # x is the column, y the row
        assert _independent_inner_region(full)[y, x]


def test_point_seed_changes_points_but_not_segments():
    label = np.zeros((40, 40), dtype=np.uint8)
    label[5:35, 5:35] = 1
    points = {tuple(oracle_prompts(label, "point", seed=s)[0][0]) for s in range(8)}
    assert len(points) > 1  # the inner square has hundreds of candidates


def test_point_on_a_vertical_line_has_x_as_column():
    label = np.zeros((16, 16), dtype=np.uint8)
    label[2:14, 7] = 3  # 12 px, one column wide: every pixel has distance 1 -> all candidates
    prompts, classes = oracle_prompts(label, "point", ignore_label=[0, 255])
    np.testing.assert_array_equal(classes, [3])
    x, y = prompts[0]
    assert x == 7 and 2 <= y < 14


def test_interior_candidates_square_by_hand():
    # 17 x 17 square: distance of pixel (i, j) is min(i+1, j+1, 17-i, 17-j), max 9,
    # 9 / 1.7 = 5.29 -> distance >= 6 -> indices 5..11: a 7 x 7 block.
    mask = np.ones((17, 17), dtype=bool)
    cand = interior_candidates(mask)
    assert len(cand) == 49
    assert cand.min() == 5 and cand.max() == 11
    # 34 x 34: max 17 and 17 / 1.7 = 10 exactly: distance 10 is not "greater", so >= 11:
    # indices 10..23, a 14 x 14 block.
    cand = interior_candidates(np.ones((34, 34), dtype=bool))
    assert len(cand) == 196
    assert cand.min() == 10 and cand.max() == 23


def test_segment_prompts_uses_the_callers_rng():
    label = np.zeros((30, 30), dtype=np.uint8)
    label[3:27, 3:27] = 1
    a = segment_prompts(label, "point", np.random.default_rng(5))
    b = segment_prompts(label, "point", np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    # oracle_prompts(seed) is segment_prompts with default_rng(seed)
    np.testing.assert_array_equal(oracle_prompts(label, "point", seed=5)[0], a[0])
    with pytest.raises(ValueError, match="needs a numpy.random.Generator"):
        segment_prompts(label, "point")
    # no dummy prompt in the shared helper
    empty = np.full((4, 4), 255, dtype=np.uint8)
    prompts, classes = segment_prompts(empty, "box")
    assert prompts.shape == (0, 4) and classes.shape == (0,)


# ------------------------------------------------------------------- dummy and errors


@pytest.mark.parametrize("kind,dummy", [("box", DUMMY_BOX), ("point", DUMMY_POINT)])
def test_empty_image_gets_the_dummy_prompt(kind, dummy):
    assert DUMMY_BOX == (0, 0, 1, 1) and DUMMY_POINT == (0, 0)  # as SAM-MESS
    all_ignore = np.full((8, 8), 255, dtype=np.uint8)
    prompts, classes = oracle_prompts(all_ignore, kind)
    np.testing.assert_array_equal(prompts, [dummy])
    np.testing.assert_array_equal(classes, [0])
    # segments all below min_pixels -> also the dummy
    tiny = np.full((8, 8), 255, dtype=np.uint8)
    tiny[0, 0] = 3
    prompts, classes = oracle_prompts(tiny, kind)
    np.testing.assert_array_equal(prompts, [dummy])
    np.testing.assert_array_equal(classes, [0])


def test_errors():
    label = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"kind must be one of \('box', 'point'\), got 'mask'"):
        oracle_prompts(label, "mask")
    with pytest.raises(ValueError, match=r"2-D \(H, W\).*shape \(1, 4, 4\)"):
        oracle_prompts(label[None], "box")
    with pytest.raises(ValueError, match=r"2-D \(H, W\).*shape \(4,\)"):
        oracle_prompts(label[0], "point")
    with pytest.raises(ValueError, match="integer dtype, got float32"):
        oracle_prompts(label.astype(np.float32), "box")
    with pytest.raises(ValueError, match="max_prompts"):
        oracle_prompts(label, "box", max_prompts=0)


# ---------------------------------------------------------------------- label resize


@pytest.mark.parametrize(
    "shape,expected",
    [
        ((300, 500), (614, 1024)),
        ((1024, 1024), (1024, 1024)),
        ((2000, 1500), (1024, 768)),
        ((5, 3), (1024, 614)),
    ],
)
def test_longest_side_shape(shape, expected):
    # by hand: scale = 1024 / max(h, w); new = int(old * scale + 0.5)
    assert longest_side_shape(*shape) == expected
    assert resize_label_longest_side(np.zeros(shape, dtype=np.uint8)).shape == expected


def test_resize_label_matches_pillow_nearest():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for h, w in [(37, 91), (300, 500), (1500, 700), (64, 64)]:
        label = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
        ours = resize_label_longest_side(label)
        nh, nw = ours.shape
        pil = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
        np.testing.assert_array_equal(ours, pil)


def test_resize_label_by_hand_and_keeps_values():
    label = np.array([[0, 1], [2, 255]], dtype=np.int32)
    out = resize_label_longest_side(label, target=4)
    np.testing.assert_array_equal(
        out, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]
    )
    assert out.dtype == np.int32
