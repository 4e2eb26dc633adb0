"""Synthetic shapes × textures: the embedded default dataset, generated on the fly.

K categories; category *k* is a shape (circle, square, …) and a texture (stripes, dots, …).
Splits: ``train`` / ``val`` are cue-consistent (shape k filled with texture k); ``conflict``
fills every shape with every *other* category's texture and names samples like the real
cue-conflict stimuli (``circle1-square1``: circle's shape, square's texture); ``shape_only``
(flat silhouettes) and ``texture_only`` (texture patches without a shape) are the controls.
Each image is a pure function of (seed, split, index), so any worker or rank reproduces it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image

from selfsup_vis.data.base import ImageDataset

SHAPES = [
    "circle", "square", "triangle", "star", "cross", "hexagon", "diamond", "crescent",
    "pentagon", "heart", "arrow", "ring",
]  # fmt: skip
TEXTURES = [
    "stripes0", "dots", "checker", "stripes90", "waves", "noise", "stripes45", "grid",
    "zigzag", "rings", "stripes135", "hatch",
]  # fmt: skip
SPLITS = ("train", "val", "conflict", "shape_only", "texture_only")
PLACEMENTS = ("centred", "anywhere")
BACKGROUNDS = ("flat", "texture", "noise")
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
_SUPERSAMPLE = 2


def _polygon(vertices: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    return MplPath(vertices).contains_points(pts).reshape(xx.shape)


def _regular(n: int, radius: float = 1.0, phase: float = math.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` in canonical coordinates (unit size, centred at 0)."""
    r = np.hypot(xx, yy)
    if shape == "circle":
        return r <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "square":
        return (np.abs(xx) <= 0.85) & (np.abs(yy) <= 0.85)
    if shape == "diamond":
        return np.abs(xx) / 0.8 + np.abs(yy) <= 1.0
    if shape == "cross":
        return ((np.abs(xx) <= 0.3) & (np.abs(yy) <= 1.0)) | ((np.abs(yy) <= 0.3) & (np.abs(xx) <= 1.0))
    if shape == "crescent":
        return (r <= 1.0) & (np.hypot(xx - 0.45, yy - 0.2) > 0.8)
    if shape == "heart":
        x, y = xx * 1.2, -yy * 1.2 + 0.25
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    if shape == "star":
        outer, inner = _regular(5, 1.0), _regular(5, 0.42, math.pi / 2 + math.pi / 5)
        return _polygon(np.stack([outer, inner], 1).reshape(-1, 2), xx, yy)
    if shape in ("triangle", "pentagon", "hexagon"):
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
        return _polygon(_regular(n), xx, yy)
    if shape == "arrow":
        v = np.array([[-1, 0.3], [0.2, 0.3], [0.2, 0.7], [1, 0], [0.2, -0.7], [0.2, -0.3], [-1, -0.3]])
        return _polygon(v, xx, yy)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def texture_pattern(texture: str, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pattern in [0, 1] over image coordinates; period and phase jittered per sample."""
    period = rng.uniform(0.22, 0.32)
    phase = rng.uniform(0, 2 * math.pi)
    f = 2 * math.pi / period
    if texture.startswith("stripes"):
        a = math.radians(float(texture[len("stripes") :]) + rng.uniform(-8, 8))
        return (np.sin(f * (xx * math.cos(a) + yy * math.sin(a)) + phase) > 0).astype(float)
    if texture == "dots":
        u, v = np.mod(xx / period + phase, 1) - 0.5, np.mod(yy / period + phase, 1) - 0.5
        return (np.hypot(u, v) < 0.28).astype(float)
    if texture == "checker":
        return ((np.floor(xx / period + phase) + np.floor(yy / period + phase)) % 2).astype(float)
    if texture == "waves":
        return (np.sin(f * yy + 2.0 * np.sin(f * 0.7 * xx) + phase) > 0).astype(float)
    if texture == "noise":
        n = max(4, int(round(2.0 / period)))
        coarse = rng.random((n, n))
        iy = np.clip(((yy + 1) / 2 * n).astype(int), 0, n - 1)
        ix = np.clip(((xx + 1) / 2 * n).astype(int), 0, n - 1)
        return (coarse[iy, ix] > 0.5).astype(float)
    if texture == "grid":
        u, v = np.mod(xx / period + phase, 1), np.mod(yy / period + phase, 1)
        return ((u < 0.2) | (v < 0.2)).astype(float)
    if texture == "zigzag":
        return (np.sin(f * yy + 3.0 * np.abs(np.mod(xx / period, 1) - 0.5) * 4 + phase) > 0).astype(float)
    if texture == "rings":
        return (np.sin(f * np.hypot(xx - rng.uniform(-1, 1), yy - rng.uniform(-1, 1)) + phase) > 0).astype(float)
    if texture == "hatch":
        s1 = np.sin(f * (xx + yy) / math.sqrt(2) + phase) > 0.6
        s2 = np.sin(f * (xx - yy) / math.sqrt(2) + phase) > 0.6
        return (s1 | s2).astype(float)
    raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours with clear luminance contrast, so a pattern is always visible."""
    dark = rng.uniform(0.0, 0.35, 3)
    light = rng.uniform(0.65, 1.0, 3)
    return (dark, light) if rng.random() < 0.5 else (light, dark)


def render(
    size: int,
    rng: np.random.Generator,
    shape: str | None,
    texture: str | None,
    placement: str = "centred",
    background: str = "flat",
) -> Image.Image:
    """One RGB image: ``shape`` (None = whole frame) filled with ``texture`` (None = flat)."""
    return render_with_mask(size, rng, shape, texture, placement, background)[0]


def render_with_mask(
    size: int,
    rng: np.random.Generator,
    shape: str | None,
    texture: str | None,
    placement: str = "centred",
    background: str = "flat",
) -> tuple[Image.Image, np.ndarray]:
    """The image of :func:`render` (same RNG draws, same pixels) and the shape's coverage
    (size, size) float32 in [0, 1], box-downsampled like the image (all ones without a shape).

    ``placement``: ``centred`` (scale 0.55–0.8 of the half-frame, centre within ±0.15) or
    ``anywhere`` (scale 0.3–0.5, anywhere fully inside the frame: a centred prior is no help).
    ``background``: ``flat`` (light grey), ``texture`` (a random other texture in two colours
    drawn like the shape's: the same low-level statistics, so only the shape tells them apart) or
    ``noise`` (a random colour of any hue and brightness with low-contrast pixel noise: the object
    is the textured region, but over a set of images the background's colour varies as much as the
    object's, so a projection of raw pixels does not split them).
    The defaults draw exactly the random numbers they always drew (same images)."""
    if placement not in PLACEMENTS or background not in BACKGROUNDS:
        raise ValueError(f"synthetic placement {placement!r} / background {background!r} unknown; "
                         f"valid: {list(PLACEMENTS)} / {list(BACKGROUNDS)}")
    s = size * _SUPERSAMPLE
    lin = (np.arange(s) + 0.5) / s * 2 - 1
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    background_img = np.clip(rng.uniform(0.75, 0.95) + rng.normal(0, 0.03, (s, s, 1)), 0, 1)
    background_img = background_img * np.ones(3)
    if texture is None:
        fill = np.ones((s, s, 3)) * rng.uniform(0.05, 0.55, 3)
    else:
        pattern = texture_pattern(texture, xx, yy, rng)[..., None]
        c0, c1 = _two_colours(rng)
        fill = pattern * c1 + (1 - pattern) * c0
    inside = np.ones((s, s, 1), dtype=bool)
    if shape is None:
        img = fill
    else:
        if placement == "centred":
            scale = rng.uniform(0.55, 0.8)
            cx, cy = rng.uniform(-0.15, 0.15, 2)
        else:
            scale = rng.uniform(0.3, 0.5)
            cx, cy = rng.uniform(-(1 - scale), 1 - scale, 2)
        angle = rng.uniform(-math.pi / 12, math.pi / 12)
        u, v = (xx - cx) / scale, (yy - cy) / scale
        ur = u * math.cos(angle) + v * math.sin(angle)
        vr = -u * math.sin(angle) + v * math.cos(angle)
        inside = shape_mask(shape, ur, -vr)[..., None]
        if background == "texture":
            other = [t for t in TEXTURES if t != texture]
            c0, c1 = _two_colours(rng)
            pattern = texture_pattern(other[int(rng.integers(len(other)))], xx, yy, rng)[..., None]
            background_img = pattern * c1 + (1 - pattern) * c0
        elif background == "noise":
            background_img = np.clip(rng.uniform(0.0, 1.0, 3) + rng.normal(0, 0.06, (s, s, 3)), 0, 1)
        img = np.where(inside, fill, background_img)
    pil = Image.fromarray((img * 255).round().astype(np.uint8), "RGB")
    cover = Image.fromarray(inside[..., 0].astype(np.float32), "F").resize((size, size), Image.Resampling.BOX)
    return pil.resize((size, size), Image.Resampling.BOX), np.asarray(cover, dtype=np.float32)


class SyntheticShapes(ImageDataset):
    """The synthetic shapes × textures dataset (see module docstring)."""

    def __init__(
        self,
        split: str = "train",
        num_classes: int = 8,
        image_size: int = 64,
        samples_per_class: int = 64,
        conflict_per_pair: int = 1,
        seed: int = 0,
        transform: Callable[[Image.Image], dict[str, Any]] | None = None,
        placement: str = "centred",
        background: str = "flat",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"synthetic split {split!r} unknown; valid: {list(SPLITS)}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"synthetic num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
        if image_size < 16:
            raise ValueError(f"synthetic image_size must be >= 16, got {image_size}")
        if placement not in PLACEMENTS:
            raise ValueError(f"synthetic placement {placement!r} unknown; valid: {list(PLACEMENTS)}")
        if background not in BACKGROUNDS:
            raise ValueError(f"synthetic background {background!r} unknown; valid: {list(BACKGROUNDS)}")
        self.split, self.image_size, self.seed = split, image_size, seed
        self.placement, self.background = placement, background
        classes = SHAPES[:num_classes]
        self.textures = TEXTURES[:num_classes]
        k = num_classes
        if split == "conflict":
            self.pairs = [
                (i, j, n)
                for i in range(k)
                for j in range(k)
                if i != j
                for n in range(conflict_per_pair)
            ]
            names = [f"{classes[i]}/{classes[i]}{n + 1}-{classes[j]}{n + 1}.png" for i, j, n in self.pairs]
        else:
            self.pairs = [(i, i, n) for i in range(k) for n in range(samples_per_class)]
            names = [f"{classes[i]}/{split}_{classes[i]}{n + 1}.png" for i, _, n in self.pairs]
        labels = [p[0] for p in self.pairs]
        super().__init__(labels, names, classes, transform)

    def texture_label(self, index: int) -> int:
        return self.pairs[index][1]

    def _render(self, index: int) -> tuple[Image.Image, np.ndarray]:
        shape_idx, texture_idx, _ = self.pairs[index]
        rng = np.random.default_rng((self.seed, _SPLIT_CODE[self.split], index))
        shape = None if self.split == "texture_only" else self.classes[shape_idx]
        texture = None if self.split == "shape_only" else self.textures[texture_idx]
        return render_with_mask(self.image_size, rng, shape, texture, self.placement, self.background)

    def load_image(self, index: int) -> Image.Image:
        return self._render(index)[0]

    def object_mask(self, index: int) -> np.ndarray | None:
        """Where the shape is in image ``index`` (image_size², bool: >= half a pixel covered),
        for scoring where a model looks; None for ``texture_only`` (no object)."""
        if self.split == "texture_only":
            return None
        return self._render(index)[1] >= 0.5
