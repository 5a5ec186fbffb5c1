"""Label mappings as MESS's preparation scripts define them, and the values they leave undefined.

``rgb_map`` is checked against a transcription of the scripts' loop (prepare_isaid.py,
prepare_isprs_potsdam.py, prepare_cwfid.py: each colour of the table, in order, replaced in place
by its class in all channels, then channel 0 kept). Values for which a script has no class (it
fails, or writes a label value its evaluator cannot count) must become the ignore label 255.
"""

import numpy as np
import pytest
from PIL import Image

from mopeft_jax.data.mess import atlantis, cwfid, dark_zurich, isaid, isprs_potsdam, uavid
from mopeft_jax.data.mess.labels import lut_map, rgb_map


def _mess_colour_loop(rgb, table):
    """MESS's ``for idx, rgb in table.items(): mask[(mask == rgb).all(axis=-1)] = idx``."""
    mask = np.array(rgb, np.uint8)
    for colour, k in table.items():
        mask[(mask == colour).all(axis=-1)] = k
    return mask[:, :, 0]


def _image(colours):
    return Image.fromarray(np.array([colours], np.uint8))


@pytest.mark.parametrize("module", [isaid, isprs_potsdam, cwfid], ids=lambda m: m.__name__)
def test_rgb_map_is_mess_colour_loop(module):
    table, k = module._COLOURS, len(module.CLASSES)
    rng = np.random.default_rng(0)
    palette = np.array(list(table), np.uint8)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rgb[:, :25] = palette[rng.integers(0, len(palette), (40, 25))]  # half palette colours
    rgb[::7, 25::3, 0] = rng.integers(0, k, rgb[::7, 25::3, 0].shape)  # off colours, red a class
    rgb[::5, 25::4, 0] = 255
    want = _mess_colour_loop(rgb, table)
    want[(want >= k) & (want != 255)] = 255  # no class in MESS: ignored here
    got = rgb_map(rgb, table, k)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8 and (got[:, :25] < k).all()


def test_isaid_off_palette_colours_keep_their_red_value():
    rgb = np.array([[(0, 50, 50), (10, 50, 50), (15, 1, 1), (16, 0, 0), (255, 9, 9), (0, 0, 63)]])
    got = rgb_map(rgb, isaid._COLOURS, len(isaid.CLASSES))
    np.testing.assert_array_equal(got, [[0, 10, 15, 255, 255, 1]])


def test_cwfid_off_palette_colours_keep_their_red_value():
    rgb = np.array([[(0, 0, 255), (255, 255, 0), (2, 9, 9), (100, 0, 0), (255, 0, 0), (0, 255, 0)]])
    got = rgb_map(rgb, cwfid._COLOURS, len(cwfid.CLASSES))
    np.testing.assert_array_equal(got, [[0, 255, 2, 255, 1, 2]])


def test_potsdam_binarises_then_maps():
    colours = [(20, 10, 100), (255, 0, 255), (250, 251, 240), (129, 128, 0), (0, 0, 200)]
    # black -> 0 (road), magenta -> ignored, white -> 0, (255, 0, 0) -> 5, (0, 0, 255) -> 1
    np.testing.assert_array_equal(isprs_potsdam._label(_image(colours)), [[0, 255, 0, 5, 1]])


def test_uavid_looks_up_grey_values():
    # MESS's literal table (prepare_uavid.py) is what the colours' grey values give.
    assert uavid._GREY_TO_CLASS == {0: 0, 34: 5, 38: 1, 57: 7, 75: 3, 79: 6, 90: 2, 113: 4}
    colours = [(128, 0, 0), (38, 38, 38), (64, 64, 0), (1, 2, 3), (200, 200, 200)]
    # (1, 2, 3) is grey 2 and (200, 200, 200) grey 200: no class (MESS's script fails on them)
    np.testing.assert_array_equal(uavid._label(_image(colours)), [[1, 1, 7, 255, 255]])


def test_values_beyond_the_lookup_tables_are_ignored():
    # MESS's np.vectorize(table.get) fails on them.
    values = Image.fromarray(np.array([[0, 1, 56, 57, 200]], np.uint8))
    np.testing.assert_array_equal(atlantis._label(values), [[255, 0, 55, 255, 255]])
    ids = np.array([[0, 7, 33, 1, 5, 34]])
    np.testing.assert_array_equal(
        lut_map(ids, dark_zurich._ID_TO_CLASS), [[0, 1, 19, 255, 255, 255]]
    )


def test_lut_map():
    values = np.array([[0, 3, 7, 300]])
    np.testing.assert_array_equal(lut_map(values, {3: 1, 7: 0}), [[255, 1, 0, 255]])
    np.testing.assert_array_equal(lut_map(np.array([True, False]), {1: 4}, default=0), [4, 0])
