"""Scatter styling that scales to millions of points, and a categorical density image.

Up to a few thousand points every marker is drawn as a vector. Above ``RASTERIZE_ABOVE`` the
scatter layers are rasterised inside PDF/SVG (axes, text and legend stay vector), so a 10^6
point figure is a small file. Marker area and opacity shrink with N so that dense regions do not
saturate into solid blobs. Above ``DENSITY_ABOVE`` (or on request) the points are replaced by
one image: a 2-D histogram per class, coloured by the mix of classes in each cell and with an
opacity that grows with the log of its count — the datashader idea, in numpy.
"""

from __future__ import annotations

import numpy as np

RASTERIZE_ABOVE = 5000
DENSITY_ABOVE = 300_000
DENSITY_BINS = 700


def point_style(n: int) -> tuple[float, float]:
    """(marker area in pt², alpha) for ``n`` points: 25 pt² / 0.8 for small N, down to
    0.25 pt² / 0.25 for millions."""
    size = float(np.clip(20000.0 / max(n, 1), 0.25, 25.0))
    alpha = float(np.clip(np.sqrt(40_000.0 / max(n, 1)), 0.25, 0.8))
    return size, alpha


def use_density(n: int, density: bool | None) -> bool:
    return bool(density) if density is not None else n > DENSITY_ABOVE


def density_rgba(coords: np.ndarray, codes: np.ndarray, colors: np.ndarray, *,
                 bins: int = DENSITY_BINS) -> tuple[np.ndarray, list[float]]:
    """RGBA image (bins, bins, 4) and its ``extent`` for ``imshow(origin="lower")``.

    ``codes``: class index per point (0..K-1) into ``colors`` (K, 3). Each cell's colour is
    the count-weighted mean of its classes' colours; alpha = log1p(count) / log1p(max count).
    """
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    pad = 0.02 * span
    lo, hi = lo - pad, hi + pad
    cell = np.minimum(((coords - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    flat = cell[:, 1] * bins + cell[:, 0]
    k = colors.shape[0]
    counts = np.bincount(np.asarray(codes, dtype=np.int64) * bins * bins + flat,
                         minlength=k * bins * bins).reshape(k, bins * bins).astype(np.float64)
    total = counts.sum(axis=0)
    rgb = (counts.T @ np.asarray(colors, dtype=np.float64)) / np.maximum(total, 1.0)[:, None]
    alpha = np.log1p(total) / np.log1p(max(total.max(), 1.0))
    img = np.concatenate([rgb, alpha[:, None]], axis=1).reshape(bins, bins, 4)
    return img.astype(np.float32), [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def draw_density(ax, coords: np.ndarray, codes: np.ndarray, colors: np.ndarray, *,
                 bins: int = DENSITY_BINS) -> None:
    """The density image of :func:`density_rgba` on ``ax`` (a raster layer in PDF/SVG)."""
    img, extent = density_rgba(coords, codes, colors, bins=bins)
    ax.imshow(img, origin="lower", extent=extent, interpolation="nearest", aspect="auto")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
