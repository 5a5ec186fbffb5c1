"""A procedurally generated, multi-domain semantic segmentation dataset.

The images are scenes of a few random shapes (ellipses, rotated rectangles, triangles, star-like
polygons, rings, thin curvy strips) painted back to front over a textured background. The shape of
an object decides its semantic class; the *domain* decides how scenes look (palette, textures,
sensor degradations) and how they are laid out (object count, size and elongation). A small SAM can
be pretrained on the ``source`` domain and adapted to the shifted target domains:

==================  =========================================================================
``source``          vivid objects, one characteristic hue per class, mild textures, calm
                    background; 3-7 medium-sized objects.
``color_shift``     the source scenes under a strong global colour change: hue rotated by
                    90-270 degrees, palette inverted half of the time, saturation and contrast
                    rescaled.
``texture_shift``   other texture families (dots, concentric rings, wavy grain, fine checkers,
                    pixel noise) at high amplitude, on a strongly textured background whose
                    mean colour is close to the objects' (low object/background contrast).
``noise_shift``     the source scenes seen by a poor camera: blur, low light with a gamma
                    curve, signal-dependent sensor noise, JPEG-like 8x8 blockiness; a thin
                    ignore band (255) around most object borders, as in hand-labelled data.
``shape_shift``     other shape statistics and classes: many (10-24) small objects, strongly
                    elongated bars and ellipses, star-like polygons and thin curvy strips.
==================  =========================================================================

Everything is plain numpy (no jax, torch or tensorflow). An example is a pure function of
``(domain, split, index, seed, image_size)``: its random generator is seeded with a
``numpy.random.SeedSequence`` built from the seed, a stable (blake2b) hash of the domain and split
names, and the index. The scene layout and all colours come from a generator that does not depend
on the image size, so one example rendered at two sizes shows the same scene. The splits are
different streams of scenes, so train and val never share an example.

Public names:

- :data:`DOMAINS`: read-only mapping ``name -> DatasetInfo`` (class names, background class, ignore
  label; :class:`mopeft_jax.data.registry.DatasetInfo`).
- :data:`SOURCE_DOMAIN`, :data:`TARGET_DOMAINS`: the pretraining domain and the shifted ones.
- :data:`IGNORE_LABEL`: 255 (:data:`mopeft_jax.segments.IGNORE_LABEL`).
- :func:`make_example`: one ``{"image", "label", "domain", "index"}`` example.
- :class:`SyntheticSegmentation`: a random-access source (``__len__``/``__getitem__``), usable
  as a grain ``RandomAccessDataSource`` (``grain.MapDataset.source(SyntheticSegmentation(...))``).
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import math
import types
from typing import Any, Mapping

import numpy as np

from mopeft_jax.data.registry import DatasetInfo
from mopeft_jax.segments import IGNORE_LABEL

__all__ = [
    "DOMAINS",
    "IGNORE_LABEL",
    "SOURCE_DOMAIN",
    "SyntheticSegmentation",
    "TARGET_DOMAINS",
    "make_example",
]

_GENERATOR_VERSION = 1  # Part of every seed: bump it when the generator changes its output.
_DEFAULT_IMAGE_SIZE = (128, 128)
DOMAIN = "Synthetic"
"""The domain (as in MESS's domains) every synthetic dataset is reported under."""


@dataclasses.dataclass(frozen=True)
class _Style:
    """How a domain draws its scenes (private; ranges are ``(low, high)`` of uniform draws)."""

    kinds: tuple[str, ...]  # shape kind of class 1, 2, ... (parallel to class_names[1:])
    num_objects: tuple[int, int] = (3, 7)  # inclusive
    size: tuple[float, float] = (0.08, 0.22)  # radius / min(H, W), drawn log-uniformly
    aspect: tuple[float, float] = (1.0, 2.0)  # long / short axis, drawn log-uniformly
    class_hues: tuple[float, ...] | None = (0.0, 0.36, 0.62, 0.13)  # None: random hues
    hue_jitter: float = 0.05
    obj_sat: tuple[float, float] = (0.55, 0.95)
    obj_val: tuple[float, float] = (0.6, 1.0)
    obj_textures: tuple[str, ...] = ("flat", "stripes", "checker", "blobs")
    obj_tex_amp: tuple[float, float] = (0.1, 0.35)
    tex_period: tuple[float, float] = (0.05, 0.12)  # texture period / min(H, W)
    bg_sat: tuple[float, float] = (0.0, 0.25)
    bg_val: tuple[float, float] = (0.2, 0.5)
    bg_textures: tuple[str, ...] = ("blobs",)
    bg_tex_amp: tuple[float, float] = (0.15, 0.4)
    low_contrast: bool = False  # objects take the background's colour, slightly moved
    illumination: float = 0.25  # max strength of a linear illumination gradient
    # Global colour change (color_shift).
    hue_rotation: tuple[float, float] | None = None  # net hue rotation in degrees
    invert_prob: float = 0.0
    sat_scale: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    # Camera degradations (noise_shift).
    blur_sigma: tuple[float, float] = (0.0, 0.0)  # pixels at 256 px, scaled with the size
    gain: tuple[float, float] = (1.0, 1.0)  # low light
    gamma: tuple[float, float] = (1.0, 1.0)
    noise_sigma: tuple[float, float] = (0.0, 0.0)  # read noise, [0, 1] intensity units
    shot_noise: tuple[float, float] = (0.0, 0.0)  # sigma = shot * sqrt(intensity)
    jpeg_prob: float = 0.0
    # Ignore band around object borders.
    ignore_width: int = 0  # pixels at 256 px (at least 1 when > 0)
    ignore_prob: float = 0.0  # fraction of objects that get the band


_SOURCE_CLASSES = ("background", "ellipse", "rectangle", "triangle", "ring")
_SOURCE_KINDS = ("ellipse", "rectangle", "triangle", "ring")

_STYLES: dict[str, _Style] = {
    "source": _Style(kinds=_SOURCE_KINDS),
    "color_shift": _Style(
        kinds=_SOURCE_KINDS,
        hue_rotation=(90.0, 270.0),
        invert_prob=0.5,
        sat_scale=(0.5, 1.4),
        contrast=(0.6, 1.2),
    ),
    "texture_shift": _Style(
        kinds=_SOURCE_KINDS,
        class_hues=None,
        obj_textures=("dots", "rings", "grain", "fine_checker", "noise"),
        obj_tex_amp=(0.55, 0.9),
        tex_period=(0.03, 0.07),
        bg_sat=(0.0, 0.35),
        bg_val=(0.35, 0.65),
        bg_textures=("stripes", "dots", "grain", "noise", "fine_checker"),
        bg_tex_amp=(0.5, 0.85),
        low_contrast=True,
        illumination=0.15,
    ),
    "noise_shift": _Style(
        kinds=_SOURCE_KINDS,
        blur_sigma=(0.8, 2.2),
        gain=(0.3, 0.6),
        gamma=(1.2, 1.8),
        noise_sigma=(0.02, 0.06),
        shot_noise=(0.03, 0.08),
        jpeg_prob=0.7,
        ignore_width=2,
        ignore_prob=0.8,
    ),
    "shape_shift": _Style(
        kinds=("ellipse", "bar", "polygon", "strip"),
        num_objects=(10, 24),
        size=(0.03, 0.09),
        aspect=(2.0, 6.0),
        ignore_width=1,
        ignore_prob=0.3,
    ),
}


def _domain(name: str, class_names: tuple[str, ...], description: str) -> DatasetInfo:
    return DatasetInfo(name, DOMAIN, class_names, background_class=0, description=description)


DOMAINS: Mapping[str, DatasetInfo] = types.MappingProxyType(
    {
        "source": _domain(
            "source",
            _SOURCE_CLASSES,
            "Reference domain: vivid, class-coloured, mildly textured shapes.",
        ),
        "color_shift": _domain(
            "color_shift",
            _SOURCE_CLASSES,
            "Source scenes with rotated hues, often inverted palette, rescaled "
            "saturation and contrast.",
        ),
        "texture_shift": _domain(
            "texture_shift",
            _SOURCE_CLASSES,
            "Other, strong texture families; objects close in colour to a strongly "
            "textured background.",
        ),
        "noise_shift": _domain(
            "noise_shift",
            _SOURCE_CLASSES,
            "Source scenes with blur, low light, sensor noise and JPEG-like "
            "blockiness; ignore band around most object borders.",
        ),
        "shape_shift": _domain(
            "shape_shift",
            ("background", "ellipse", "bar", "polygon", "strip"),
            "Many small, elongated objects: ellipses, bars, star-like polygons, thin curvy strips.",
        ),
    }
)
"""Read-only mapping from a domain name to its :class:`~mopeft_jax.data.registry.DatasetInfo`."""

SOURCE_DOMAIN = "source"
"""The domain a model is pretrained on."""

TARGET_DOMAINS: tuple[str, ...] = ("color_shift", "texture_shift", "noise_shift", "shape_shift")
"""The shifted domains a pretrained model is adapted to."""


# --------------------------------------------------------------------------------------------
# Seeding


def _name_key(name: str) -> int:
    """A stable 64-bit integer for a string (unlike ``hash()``, the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def _seed_sequence(seed: int, domain: str, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        [_GENERATOR_VERSION, int(seed), _name_key(domain), _name_key(split), int(index)]
    )


def _as_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    else:
        height, width = (int(s) for s in image_size)
    if height < 8 or width < 8:
        raise ValueError(f"image_size must be at least 8x8, got {(height, width)}")
    return height, width


def _as_index(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Small numpy helpers


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(
        colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float32
    )


def _smooth_index(n_out: int, n_grid: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Left grid index and smoothstep weight of each of n_out points on a 1-d grid.

    Output pixel i sits at grid coordinate ``0.5 + i * scale``.
    """
    pos = np.clip(0.5 + np.arange(n_out, dtype=np.float32) * np.float32(scale), 0.0, n_grid - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.intp), n_grid - 2)
    frac = pos - i0.astype(np.float32)
    return i0, frac * frac * (3.0 - 2.0 * frac)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """(height, width) smooth value noise in [0, 1] with features about ``cell`` pixels wide."""
    cell = max(cell, 2.0)
    gh = int(math.ceil(height / cell)) + 2
    gw = int(math.ceil(width / cell)) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    # Separable interpolation by gathers (no BLAS: its threads only slow down small products).
    iy, fy = _smooth_index(height, gh, 1.0 / cell)
    ix, fx = _smooth_index(width, gw, 1.0 / cell)
    rows = grid[iy] + fy[:, None] * (grid[iy + 1] - grid[iy])  # (height, gw)
    field = rows[:, ix] + fx * (rows[:, ix + 1] - rows[:, ix])
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / max(hi - lo, 1e-6)


def _texture(
    family: str,
    dy: np.ndarray,
    dx: np.ndarray,
    params: dict[str, float],
    rng_pix: np.random.Generator,
) -> np.ndarray | None:
    """Scalar texture field in [0, 1] on the grid ``dy`` (h, 1), ``dx`` (1, w); None if flat."""
    if family == "flat":
        return None
    period = params["period"]
    c, s = params["cos"], params["sin"]
    u = dx * c + dy * s
    v = dy * c - dx * s
    if family == "stripes":
        return 0.5 + 0.5 * np.tanh(3.0 * np.sin((2 * np.pi / period) * u + params["phase"]))
    if family in ("checker", "fine_checker"):
        p = period if family == "checker" else max(period * 0.5, 2.0)
        return ((np.floor(u / p) + np.floor(v / p)).astype(np.int64) & 1).astype(np.float32)
    if family == "dots":
        fu = u / period - np.floor(u / period) - 0.5
        fv = v / period - np.floor(v / period) - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if family == "rings":
        r = np.sqrt(dx * dx + dy * dy)
        return 0.5 + 0.5 * np.sign(np.sin((2 * np.pi / period) * r + params["phase"]))
    if family == "grain":
        warp = params["warp"] * period * np.sin((2 * np.pi / (3.0 * period)) * v)
        return 0.5 + 0.5 * np.sin((2 * np.pi / (0.6 * period)) * (u + warp) + params["phase"])
    h, w = dy.shape[0], dx.shape[1]
    if family == "blobs":
        return _smooth_noise(rng_pix, h, w, period)
    if family == "noise":
        return rng_pix.random((h, w), dtype=np.float32)
    raise ValueError(f"unknown texture family {family!r}")


def _texture_params(rng: np.random.Generator, family: str, style: _Style, side: int) -> dict:
    angle = rng.uniform(0.0, np.pi)
    return {
        "family": family,
        "period": max(rng.uniform(*style.tex_period) * side, 3.0),
        "cos": math.cos(angle),
        "sin": math.sin(angle),
        "phase": rng.uniform(0.0, 2 * np.pi),
        "warp": rng.uniform(0.5, 1.5),
    }


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a (C, H, W) float image with edge padding."""
    if sigma <= 0.3:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(r + 1) / sigma) ** 2)
    taps = (taps / (2.0 * taps.sum() - taps[0])).astype(np.float32)  # taps[k] for offsets +-k
    h, w = img.shape[1:]
    padded = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = taps[0] * padded[:, r : r + h]
    for k in range(1, r + 1):
        out += taps[k] * (padded[:, r - k : r - k + h] + padded[:, r + k : r + k + h])
    padded = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="edge")
    out = taps[0] * padded[..., r : r + w]
    for k in range(1, r + 1):
        out += taps[k] * (padded[..., r - k : r - k + w] + padded[..., r + k : r + k + w])
    return out


def _jpeg_like(img: np.ndarray, keep: float, levels: int) -> np.ndarray:
    """Blocky 8x8 compression look on a (C, H, W) image: shrink each block towards its mean,
    quantise the rest."""
    c, h, w = img.shape
    ph, pw = (-h) % 8, (-w) % 8
    padded = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="edge") if ph or pw else img
    blocks = padded.reshape(c, (h + ph) // 8, 8, (w + pw) // 8, 8)
    mean = blocks.mean(axis=(2, 4), keepdims=True)
    resid = np.rint((blocks - mean) * np.float32(keep * levels))
    resid *= np.float32(1.0 / levels)
    resid += mean
    return resid.reshape(c, h + ph, w + pw)[:, :h, :w]


def _hue_rotation_matrix(degrees: float) -> np.ndarray:
    """3x3 rotation of RGB space about the grey axis (a hue rotation)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    k = 1.0 / math.sqrt(3.0)
    cross = k * np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    return (c * np.eye(3) + s * cross + (1.0 - c) / 3.0 * np.ones((3, 3))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Shapes


def _draw_shape(
    rng: np.random.Generator, kind: str, style: _Style, side: int, height: int, width: int
) -> dict:
    """Draws the geometry of one object: pixel units, but the random draws do not depend on the
    image size (positions and sizes are drawn relative to it)."""
    cy = rng.uniform(0.0, 1.0) * height
    cx = rng.uniform(0.0, 1.0) * width
    radius = _loguniform(rng, *style.size) * side
    aspect = _loguniform(rng, *style.aspect) if style.aspect[1] > style.aspect[0] else 1.0
    angle = rng.uniform(0.0, np.pi)
    shape = {
        "kind": kind,
        "cy": cy,
        "cx": cx,
        "radius": radius,
        "cos": math.cos(angle),
        "sin": math.sin(angle),
    }
    if kind == "rectangle" and rng.random() < 0.4:  # some axis-aligned boxes
        shape["cos"], shape["sin"] = 1.0, 0.0
    if kind in ("ellipse", "rectangle", "ring", "bar"):
        if kind == "bar":
            aspect = max(aspect, 3.0)
        stretch = aspect**0.25 if kind == "ring" else math.sqrt(aspect)  # rings stay roundish
        shape["rx"] = radius * stretch
        shape["ry"] = radius / stretch
        shape["bound"] = shape["rx"] * (1.42 if kind in ("rectangle", "bar") else 1.0)
        if kind == "ring":
            shape["inner"] = rng.uniform(0.45, 0.7)
    elif kind in ("triangle", "polygon"):
        n = 3 if kind == "triangle" else int(rng.integers(5, 9))
        base = np.arange(n) * (2 * np.pi / n)
        angles = rng.uniform(0.0, 2 * np.pi) + base + rng.uniform(-0.3, 0.3, n) * (2 * np.pi / n)
        if kind == "triangle":
            radii = radius * rng.uniform(0.85, 1.15, n)
        else:
            radii = 1.3 * radius * np.where(np.arange(n) % 2 == 0, 1.0, rng.uniform(0.4, 0.75, n))
        stretch = aspect**0.25
        px = radii * np.cos(angles) * stretch
        py = radii * np.sin(angles) / stretch
        c, s = shape["cos"], shape["sin"]
        shape["vx"] = cx + px * c - py * s
        shape["vy"] = cy + px * s + py * c
        shape["bound"] = float(np.max(np.hypot(px, py)))
    elif kind == "strip":
        half_len = radius * math.sqrt(aspect) * 1.3
        shape["half_len"] = half_len
        shape["amp"] = rng.uniform(0.1, 0.3) * half_len
        shape["freq"] = rng.uniform(0.6, 1.6) * np.pi / half_len
        shape["phase"] = rng.uniform(0.0, 2 * np.pi)
        shape["half_width"] = max(rng.uniform(0.012, 0.025) * side, 1.0)
        shape["bound"] = math.hypot(half_len, shape["amp"] + shape["half_width"])
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return shape


def _shape_mask(
    shape: dict, dy: np.ndarray, dx: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Boolean (h, w) mask of a shape on a bounding-box grid.

    ``dy`` (h, 1) and ``dx`` (1, w) are offsets from the shape's centre; ``ys``/``xs`` the
    absolute pixel coordinates.
    """
    kind = shape["kind"]
    if kind in ("triangle", "polygon"):  # crossing-number test, vectorised over pixels
        vx, vy = shape["vx"], shape["vy"]
        inside = np.zeros((ys.shape[0], xs.shape[1]), dtype=bool)
        n = len(vx)
        for i in range(n):
            x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
            if y1 == y2:
                continue
            crosses = (y1 > ys) != (y2 > ys)  # (h, 1)
            x_at = x1 + (ys - y1) * ((x2 - x1) / (y2 - y1))  # (h, 1)
            inside ^= crosses & (xs < x_at)
        return inside
    c, s = shape["cos"], shape["sin"]
    u = dx * c + dy * s
    v = dy * c - dx * s
    if kind in ("ellipse", "ring"):
        r2 = (u / shape["rx"]) ** 2 + (v / shape["ry"]) ** 2
        if kind == "ellipse":
            return r2 <= 1.0
        return (r2 <= 1.0) & (r2 >= shape["inner"] ** 2)
    if kind in ("rectangle", "bar"):
        return (np.abs(u) <= shape["rx"]) & (np.abs(v) <= shape["ry"])
    if kind == "strip":
        centre = shape["amp"] * np.sin(shape["freq"] * u + shape["phase"])
        return (np.abs(u) <= shape["half_len"]) & (np.abs(v - centre) <= shape["half_width"])
    raise ValueError(f"unknown shape kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Rendering


def _object_colours(
    rng: np.random.Generator, style: _Style, cls: int, bg_colour: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    if style.low_contrast:
        h, s, v = colorsys.rgb_to_hsv(*bg_colour.tolist())
        sign = 1.0 if rng.random() < 0.5 else -1.0
        base = _hsv(
            h + rng.uniform(-0.05, 0.05),
            s * rng.uniform(0.7, 1.3),
            v + sign * rng.uniform(0.04, 0.1),
        )
    else:
        if style.class_hues is not None:
            hue = style.class_hues[(cls - 1) % len(style.class_hues)]
            hue += rng.uniform(-style.hue_jitter, style.hue_jitter)
        else:
            hue = rng.random()
        base = _hsv(hue, rng.uniform(*style.obj_sat), rng.uniform(*style.obj_val))
    # The texture's second colour: towards black, white or the complement.
    choice = rng.integers(0, 3)
    other = (np.zeros(3, np.float32), np.ones(3, np.float32), 1.0 - base)[int(choice)]
    amp = rng.uniform(*style.obj_tex_amp)
    return base, other.astype(np.float32), amp


def _ignore_band(
    label: np.ndarray, inst: np.ndarray, selected: np.ndarray, width: int, ignore_label: int
) -> None:
    """Sets ``label`` to ``ignore_label`` within ``width`` pixels of the borders of the
    objects whose instance id is flagged in ``selected`` (in place)."""
    sel = selected[inst]
    band = np.zeros(label.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        edge = (inst[tuple(a)] != inst[tuple(b)]) & (sel[tuple(a)] | sel[tuple(b)])
        band[tuple(a)] |= edge
        band[tuple(b)] |= edge
    for _ in range(width - 1):
        grown = band.copy()
        grown[1:] |= band[:-1]
        grown[:-1] |= band[1:]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    label[band] = ignore_label


def _render(
    domain: str, height: int, width: int, rng: np.random.Generator, rng_pix: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    spec, style = DOMAINS[domain], _STYLES[domain]
    side = min(height, width)
    scale = side / 256.0

    # ---- background
    bg1 = _hsv(rng.random(), rng.uniform(*style.bg_sat), rng.uniform(*style.bg_val))
    bg_other = _hsv(rng.random(), rng.uniform(*style.bg_sat), rng.uniform(0.0, 1.0))
    bg_amp = rng.uniform(*style.bg_tex_amp)
    bg_tex = _texture_params(
        rng, style.bg_textures[int(rng.integers(len(style.bg_textures)))], style, side
    )
    if bg_tex["family"] == "blobs":
        bg_tex["period"] *= 2.5
    illum_angle = rng.uniform(0.0, 2 * np.pi)
    illum = rng.uniform(0.0, style.illumination)

    # ---- objects (all random geometry and colour first, so it does not depend on the size)
    n_obj = int(rng.integers(style.num_objects[0], style.num_objects[1] + 1))
    n_cls = spec.num_classes - 1
    classes = np.concatenate([rng.permutation(n_cls) for _ in range(n_obj // n_cls + 1)])[:n_obj]
    objects = []
    for cls in classes + 1:
        kind = style.kinds[cls - 1]
        shape = _draw_shape(rng, kind, style, side, height, width)
        colour, other, amp = _object_colours(rng, style, int(cls), bg1)
        families = [f for f in style.obj_textures if f != bg_tex["family"] or f == "flat"]
        family = families[int(rng.integers(len(families)))]
        tex = _texture_params(rng, family, style, side)
        ignore = rng.random() < style.ignore_prob
        order = shape["radius"] * rng.uniform(0.6, 1.4)
        objects.append((order, int(cls), shape, colour, other, amp, tex, ignore))
    objects.sort(key=lambda o: -o[0])  # back to front: mostly large first

    # ---- image-level transforms
    hue_deg = rng.uniform(*style.hue_rotation) if style.hue_rotation else 0.0
    invert = rng.random() < style.invert_prob
    if invert and hue_deg:
        hue_deg -= 180.0  # inverting rotates hues by 180 degrees: keep the net rotation
    sat = rng.uniform(*style.sat_scale)
    contrast = rng.uniform(*style.contrast)
    blur = rng.uniform(*style.blur_sigma) * scale
    gain = rng.uniform(*style.gain)
    gamma = rng.uniform(*style.gamma)
    noise_sigma = rng.uniform(*style.noise_sigma)
    shot = rng.uniform(*style.shot_noise)
    jpeg = rng.random() < style.jpeg_prob
    jpeg_keep = rng.uniform(0.2, 0.5)
    jpeg_levels = int(rng.integers(6, 16))

    # ---- paint the background
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    t = _texture(bg_tex["family"], ys - height / 2, xs - width / 2, bg_tex, rng_pix)
    light = 1.0 + (2.0 * illum) * (
        math.cos(illum_angle) * (xs / width - 0.5) + math.sin(illum_angle) * (ys / height - 0.5)
    )  # (H, W) multiplicative illumination gradient
    # The image is channel-first (3, H, W) float32 until the end: numpy is slow on a trailing
    # axis of 3.
    img = np.empty((3, height, width), dtype=np.float32)
    if t is not None:
        t = light * (bg_amp * t)
    for c in range(3):
        np.multiply(light, bg1[c], out=img[c])
        if t is not None:
            img[c] += t * (bg_other[c] - bg1[c])

    label = np.full((height, width), spec.background_class, dtype=np.uint8)
    inst = np.zeros((height, width), dtype=np.int32)
    selected = np.zeros(len(objects) + 1, dtype=bool)

    # ---- paint the objects, back to front
    for obj_id, (_, cls, shape, colour, other, amp, tex, ignore) in enumerate(objects, start=1):
        b = shape["bound"] + 1.0
        y0, y1 = max(0, int(shape["cy"] - b)), min(height, int(shape["cy"] + b) + 2)
        x0, x1 = max(0, int(shape["cx"] - b)), min(width, int(shape["cx"] + b) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        bys, bxs = ys[y0:y1], xs[:, x0:x1]
        dy, dx = bys - shape["cy"], bxs - shape["cx"]
        mask = _shape_mask(shape, dy, dx, bys, bxs)
        if not mask.any():
            continue
        t = _texture(tex["family"], dy, dx, tex, rng_pix)
        if t is None:
            for c in range(3):
                img[c, y0:y1, x0:x1][mask] = colour[c]
        else:
            tm = amp * t[mask]
            for c in range(3):
                img[c, y0:y1, x0:x1][mask] = colour[c] + tm * (other[c] - colour[c])
        label[y0:y1, x0:x1][mask] = cls
        inst[y0:y1, x0:x1][mask] = obj_id
        selected[obj_id] = ignore

    # ---- image-level colour change: hue rotation, inversion, saturation, contrast; all affine,
    # composed into one x -> A x + b.
    if hue_deg or invert or sat != 1.0 or contrast != 1.0:
        a = _hue_rotation_matrix(hue_deg).astype(np.float64)
        b = np.zeros(3)
        if invert:
            a, b = -a, 1.0 - b
        sat_m = (1.0 - sat) / 3.0 * np.ones((3, 3)) + sat * np.eye(3)
        a, b = sat_m @ a, sat_m @ b
        a, b = contrast * a, contrast * b + 0.5 * (1.0 - contrast)
        a, b = a.astype(np.float32), b.astype(np.float32)
        out = np.empty_like(img)
        for c in range(3):
            np.multiply(img[0], a[c, 0], out=out[c])
            out[c] += img[1] * a[c, 1]
            out[c] += img[2] * a[c, 2] + b[c]
        img = out

    # ---- camera degradations
    if blur > 0.3:
        img = _gaussian_blur(img, blur)
    if gain != 1.0 or gamma != 1.0:
        np.clip(img, 0.0, 1.0, out=img)
        img **= np.float32(gamma)
        img *= np.float32(gain)
    if noise_sigma > 0 or shot > 0:
        sigma = np.sqrt(np.maximum(img, 0.0))
        sigma *= np.float32(shot)
        sigma += np.float32(noise_sigma)
        # Unit-variance triangular noise (sum of two uniforms): close to Gaussian, 3x cheaper.
        uniform = rng_pix.random((2, *img.shape), dtype=np.float32)
        unit = uniform[0] + uniform[1]
        unit -= np.float32(1.0)
        unit *= np.float32(math.sqrt(6.0))
        sigma *= unit
        img += sigma
    if jpeg:
        img = _jpeg_like(img, jpeg_keep, jpeg_levels)

    if style.ignore_width > 0 and selected.any():
        width_px = max(1, int(round(style.ignore_width * scale)))
        _ignore_band(label, inst, selected, width_px, spec.ignore_label)

    img *= np.float32(255.0)
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    image = np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))  # (H, W, 3)
    return image, label


# --------------------------------------------------------------------------------------------
# Public API


def make_example(
    domain: str,
    index: int,
    *,
    split: str = "train",
    image_size: int | tuple[int, int] = _DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Generates one example; a pure function of its arguments.

    Args:
      domain: a key of :data:`DOMAINS`.
      index: non-negative example index within the split.
      split: any split name ("train", "val", "test", ...); each split is its own stream of scenes.
      image_size: ``(H, W)`` or an int for square images (at least 8). The scene is laid out in
        coordinates relative to the size, so one example at two sizes shows the same scene.
      seed: non-negative dataset seed; different seeds give different datasets.

    Returns:
      A dict with
        ``image``: (H, W, 3) uint8 RGB;
        ``label``: (H, W) uint8, values in ``0 .. DOMAINS[domain].num_classes - 1`` and
          ``DOMAINS[domain].ignore_label`` (255);
        ``domain``: str, the domain name;
        ``index``: int, the index.
    """
    if domain not in DOMAINS:
        raise KeyError(f"unknown domain {domain!r}; known: {sorted(DOMAINS)}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    index = _as_index(index, "index")
    seed = _as_index(seed, "seed")
    height, width = _as_size(image_size)
    geometry_ss, pixel_ss = _seed_sequence(seed, domain, split, index).spawn(2)
    image, label = _render(
        domain, height, width, np.random.default_rng(geometry_ss), np.random.default_rng(pixel_ss)
    )
    return {"image": image, "label": label, "domain": domain, "index": index}


class SyntheticSegmentation:
    """Random-access source of synthetic examples (grain ``RandomAccessDataSource`` protocol).

    ``source[i]`` is ``make_example(domain, i, split=split, image_size=image_size, seed=seed)``:
    a dict with ``image`` (H, W, 3) uint8, ``label`` (H, W) uint8, ``domain`` str and ``index``
    int. Examples are generated on demand, so the source is cheap to create and to pickle (grain
    worker processes). Use it with ``grain.MapDataset.source(SyntheticSegmentation(...))`` or as
    the ``data_source`` of a ``grain.DataLoader``.

    Args:
      domain: a key of :data:`DOMAINS`.
      split: split name; different splits hold different examples.
      num_examples: length of the source.
      image_size: ``(H, W)`` or an int.
      seed: dataset seed.
    """

    def __init__(
        self,
        domain: str,
        split: str = "train",
        num_examples: int = 1000,
        image_size: int | tuple[int, int] = _DEFAULT_IMAGE_SIZE,
        seed: int = 0,
    ):
        if domain not in DOMAINS:
            raise KeyError(f"unknown domain {domain!r}; known: {sorted(DOMAINS)}")
        self.domain = domain
        self.split = split
        self.num_examples = _as_index(num_examples, "num_examples")
        self.image_size = _as_size(image_size)
        self.seed = _as_index(seed, "seed")

    @property
    def spec(self) -> DatasetInfo:
        """The :class:`~mopeft_jax.data.registry.DatasetInfo` of this source's domain."""
        return DOMAINS[self.domain]

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.num_examples
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index out of range for a source of length {self.num_examples}")
        return make_example(
            self.domain, index, split=self.split, image_size=self.image_size, seed=self.seed
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticSegmentation(domain={self.domain!r}, split={self.split!r}, "
            f"num_examples={self.num_examples}, image_size={self.image_size}, seed={self.seed})"
        )
