"""Reconstruction figures of masked-image models, shared by task=reconstruct and the
``ReconstructionDump`` callback: per image the four panels (original, masked, reconstruction,
reconstruction + visible), a grid of several images, and HOG drawn as oriented strokes.

Everything takes plain numpy arrays (H, W, 3 in 0..1; HOG cells (nbins, h, w)), so a figure
can be redrawn from the saved ``reconstructions.npz`` without the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from selfsup_vis.plotting.log import new_figure

PANEL_TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
HOG_TITLES = ("HOG of original", "masked HOG", "predicted HOG", "predicted + visible HOG")


@dataclass
class HeatPanel:
    """A per-patch heat map drawn on a pixel panel with a colour bar: ``values`` (g, g), NaN
    where nothing is drawn (visible patches), shown 0..``vmax`` in ``cmap``; over the panel's
    image when ``over_image`` (else over black)."""

    values: np.ndarray
    vmax: float
    label: str
    over_image: bool = False
    cmap: str = "magma"


@dataclass
class ReconstructionPanels:
    """What one row (or two, with HOG) of a reconstruction figure shows."""

    title: str
    pixels: list[np.ndarray]  # four (H, W, 3) images in 0..1
    pixel_titles: Sequence[str] = PANEL_TITLES
    caption: str = ""  # the image's numbers (errors, PSNR), under its title / row label
    mask: np.ndarray | None = None  # (g, g) 1 = masked: outlined on ``outlined`` panels
    outlined: tuple[int, ...] = (1, 2, 3)
    outline_color: str = "#00e5ff"
    heat: dict[int, HeatPanel] = field(default_factory=dict)  # panel index -> heat map
    # MaskFeat: four HOG histograms (nbins, h, w) drawn as strokes on a dark background
    hog: list[np.ndarray] | None = None
    hog_cell_px: int = 8
    hog_scale: float | None = None  # stroke length of a bin value; default: robust per image
    cell_mask: np.ndarray | None = None  # (h, w) 1 = masked HOG cell, shaded in the panels
    hog_titles: Sequence[str] = field(default_factory=lambda: list(HOG_TITLES))


def hog_scale(cells: np.ndarray, percentile: float = 99.0) -> float:
    """A robust full-length value: the ``percentile`` of the positive bin values, so that a
    few strong edges do not shrink every other stroke to nothing (or saturate them)."""
    v = np.asarray(cells, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 1.0
    return float(max(np.percentile(v, percentile), 1e-8))


def hog_segments(cells: np.ndarray, cell_px: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Line segments (n, 2, 2) in pixel coordinates (x right, y down) and their strengths.

    One stroke per bin at each cell centre, along the edge (perpendicular to the bin's
    gradient orientation, as skimage's HOG visualisation draws it), of length proportional
    to the bin value (``scale`` = a full cell). Bin ``b`` covers gradient phases
    ``[b, b+1) * pi / nbins`` with phase = atan2(gx, gy) as selfsup_vis.models.hog computes
    it: the gradient points along (sin t, cos t) in (x, y) and the edge along (cos t, -sin t).
    """
    nbins, h, w = cells.shape
    theta = (np.arange(nbins) + 0.5) * math.pi / nbins
    ex, ey = np.cos(theta), -np.sin(theta)
    values = np.clip(np.asarray(cells, dtype=np.float64) / scale, 0.0, 1.0)  # (nbins, h, w)
    cy, cx = np.meshgrid((np.arange(h) + 0.5) * cell_px, (np.arange(w) + 0.5) * cell_px, indexing="ij")
    half = 0.5 * cell_px * 0.95 * values  # half length
    dx = half * ex[:, None, None]
    dy = half * ey[:, None, None]
    x0, x1 = cx[None] - dx - 0.5, cx[None] + dx - 0.5  # -0.5: imshow pixel centres
    y0, y1 = cy[None] - dy - 0.5, cy[None] + dy - 0.5
    segs = np.stack([np.stack([x0, y0], -1), np.stack([x1, y1], -1)], axis=-2).reshape(-1, 2, 2)
    strength = values.reshape(-1)
    keep = strength > 0.02
    return segs[keep], strength[keep]


def draw_hog(ax, cells: np.ndarray, cell_px: int, scale: float, cell_mask: np.ndarray | None = None,
             shade_masked: bool = False) -> None:
    """HOG histogram (nbins, h, w) as white strokes on black; masked cells shaded grey."""
    nbins, h, w = cells.shape
    bg = np.zeros((h * cell_px, w * cell_px, 3))
    if cell_mask is not None and shade_masked:
        bg[np.kron(cell_mask, np.ones((cell_px, cell_px))).astype(bool)] = 0.25
    ax.imshow(bg, interpolation="nearest")
    segs, strength = hog_segments(cells, cell_px, scale)
    if len(segs):
        colors = np.ones((len(segs), 4))
        colors[:, 3] = 0.35 + 0.65 * strength
        lw = max(0.4, min(1.5, 160.0 / max(h, w) / 8))
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=lw, capstyle="round"))
    ax.set_xlim(-0.5, w * cell_px - 0.5)
    ax.set_ylim(h * cell_px - 0.5, -0.5)


def mask_outline(mask: np.ndarray, patch_px: float) -> np.ndarray:
    """(n, 2, 2) segments (x, y pixel coordinates) of the boundary of the masked area of a
    (g, g) patch mask: every patch edge between a masked patch and a visible one (or the border)."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    segs = []
    ys, xs = np.nonzero(m[1:-1, 1:-1])
    for y, x in zip(ys, xs, strict=True):
        for dy, dx, edge in ((-1, 0, ((x, y), (x + 1, y))), (1, 0, ((x, y + 1), (x + 1, y + 1))),
                             (0, -1, ((x, y), (x, y + 1))), (0, 1, ((x + 1, y), (x + 1, y + 1)))):
            if not m[y + 1 + dy, x + 1 + dx]:
                segs.append(edge)
    if not segs:
        return np.zeros((0, 2, 2))
    return np.asarray(segs, dtype=np.float64) * patch_px - 0.5


def _draw_heat(fig, ax, img: np.ndarray, heat: HeatPanel) -> None:
    from matplotlib import colormaps

    H, W = img.shape[:2]
    ax.imshow(np.clip(img, 0, 1) if heat.over_image else np.zeros_like(img), interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(heat.values), cmap=colormaps[heat.cmap], vmin=0,
                   vmax=max(heat.vmax, 1e-12), extent=(-0.5, W - 0.5, H - 0.5, -0.5),
                   interpolation="nearest", alpha=0.85 if heat.over_image else 1.0)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.ax.tick_params(labelsize=6)
    cb.set_label(heat.label, fontsize=6)


def _hide(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _draw_rows(axes_rows, item: ReconstructionPanels, with_titles: bool, label: str | None) -> None:
    rows = [axes_rows[0]]
    fig = axes_rows[0][0].figure
    for j, (ax, img, title) in enumerate(zip(axes_rows[0], item.pixels, item.pixel_titles, strict=False)):
        if j in item.heat:
            _draw_heat(fig, ax, img, item.heat[j])
        else:
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        if item.mask is not None and j in item.outlined:
            segs = mask_outline(item.mask, img.shape[0] / item.mask.shape[0])
            ax.add_collection(LineCollection(segs, colors=item.outline_color, linewidths=0.7))
            ax.set_xlim(-0.5, img.shape[1] - 0.5)
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
        _hide(ax)
        if with_titles:
            ax.set_title(title, fontsize=8)
    if item.hog is not None:
        rows.append(axes_rows[1])
        scale = item.hog_scale or hog_scale(item.hog[0])
        for i, (ax, cells, title) in enumerate(zip(axes_rows[1], item.hog, item.hog_titles, strict=False)):
            draw_hog(ax, cells, item.hog_cell_px, scale, item.cell_mask, shade_masked=(i == 1))
            _hide(ax)
            if with_titles:
                ax.set_title(title, fontsize=8)
    if label:
        text = f"{label}\n{item.caption}" if item.caption else label
        rows[0][0].set_ylabel(text, fontsize=6.5, rotation=0, ha="right", va="center")


def reconstruction_figure(item: ReconstructionPanels, suptitle: str = "", rule: str = "") -> Figure:
    """One image: a row of the four panels (plus the HOG row for MaskFeat); ``rule`` (how the
    masked patches are displayed) and the image's numbers (``item.caption``) under the title."""
    n_rows = 1 if item.hog is None else 2
    fig = new_figure(4 * 2.4 + 0.6 * bool(item.heat), n_rows * 2.55 + 0.45)
    axes = fig.subplots(n_rows, 4, squeeze=False)
    _draw_rows(axes, item, with_titles=True, label=None)
    lines = [suptitle or item.title, item.caption, rule]
    fig.suptitle("\n".join(x for x in lines if x), fontsize=8)
    return fig


def reconstruction_grid(items: Sequence[ReconstructionPanels], title: str = "", rule: str = "") -> Figure:
    """All images in one figure: one row per image (two with HOG), column titles on top, each
    row labelled with its image and numbers, ``rule`` under the title."""
    if not items:
        raise ValueError("reconstruction_grid: no images")
    per = 1 if items[0].hog is None else 2
    n_rows = per * len(items)
    fig = new_figure(4 * 1.9 + 2.0 + 0.6 * bool(items[0].heat), n_rows * 1.95 + 0.6)
    axes = fig.subplots(n_rows, 4, squeeze=False)
    for i, item in enumerate(items):
        _draw_rows(axes[i * per : (i + 1) * per], item, with_titles=(i == 0), label=item.title)
    lines = [title, rule]
    if any(lines):
        fig.suptitle("\n".join(x for x in lines if x), fontsize=9)
    return fig
