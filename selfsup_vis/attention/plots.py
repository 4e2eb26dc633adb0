"""Figures of where a model looks: per image the input and each map overlaid (a perceptual
colormap with a colorbar), and a grid over all images. Every figure gets the run's provenance
footer; the title names the method, layer and target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from selfsup_vis.plotting.layout import block_columns, wrap_label
from selfsup_vis.plotting.log import new_figure
from selfsup_vis.plotting.mosaic import Mosaic, blend, colorize, panel_size, resize
from selfsup_vis.plotting.provenance import ProvenanceLike, add_provenance
from selfsup_vis.plotting.text import plain


def display_scale(m: np.ndarray) -> np.ndarray:
    """A map rescaled to [0, 1] for display (constant maps -> zeros)."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    return np.zeros_like(m) if not hi > lo else (m - lo) / (hi - lo)


def _overlay(ax, image: np.ndarray, m: np.ndarray, alpha: float, cmap: str, title: str,
             mask: np.ndarray | None = None) -> None:
    ax.imshow(image)
    ax.imshow(display_scale(m), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if mask is not None:
        ax.contour(mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
    ax.set_title(plain(wrap_label(title, TITLE_CHARS)), fontsize=TITLE_PT)
    ax.axis("off")


#: panel titles: characters per line at TITLE_PT on a PANEL_IN-inch panel (wrapped, not cut)
PANEL_IN = 1.8
TITLE_PT = 7.5
TITLE_CHARS = int(PANEL_IN * 72 / (TITLE_PT * 0.62))


def _colorbar(fig: Figure, axes, cmap: str) -> None:
    fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[cmap]), ax=axes, shrink=0.8,
                 label="map (min-max scaled per panel)")


def image_figure(image: np.ndarray, maps: np.ndarray, labels: Sequence[str], title: str,
                 prov: ProvenanceLike | None, alpha: float = 0.5, cmap: str = "inferno",
                 mask: np.ndarray | None = None, ncols: int | None = None) -> Figure:
    """One image (H, W, 3 in [0, 1]): the input, then each of ``maps`` (K, H, W) overlaid
    (heads of one block form a near-square grid unless ``ncols``); the object mask, when known,
    as a cyan contour."""
    n = 1 + len(maps)
    cols = min(ncols, n) if ncols else block_columns(n)
    rows = math.ceil(n / cols)
    fig = new_figure(2.0 * cols + 0.8, 2.2 * rows + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=TITLE_PT)
    axes[0].axis("off")
    for ax, m, label in zip(axes[1:], maps, labels, strict=False):
        _overlay(ax, image, m, alpha, cmap, label, mask)
    for ax in axes[n:]:
        ax.axis("off")
    _colorbar(fig, list(axes[:n]), cmap)
    fig.suptitle(plain(title), fontsize=8)
    if prov is not None:
        add_provenance(fig, prov)
    return fig


def grid_figure(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], labels: Sequence[Sequence[str]],
                names: Sequence[str], title: str, prov: ProvenanceLike | None, alpha: float = 0.5,
                cmap: str = "inferno", masks: Sequence[np.ndarray | None] | None = None,
                max_cols: int | None = None) -> Figure:
    """All images: per image the input and its panels (``maps[i]`` (K, H, W), K small), as
    many images side by side as make the grid closest to square (at most ``max_cols``); the
    image's name as its title, wrapped over lines rather than cut. Drawn as one
    :class:`~selfsup_vis.plotting.mosaic.Mosaic` (a training snapshot draws this every time)."""
    n = len(images)
    k = maps[0].shape[0] if n else 0
    per = 1 + k
    cols_img = block_columns(n, per, max_columns=max_cols)
    rows = math.ceil(n / cols_img)
    panel = panel_size(images[0].shape if n else (1, 1), round(PANEL_IN * 100))
    titles = [[wrap_label(str(names[i]), TITLE_CHARS)] + [wrap_label(lb, TITLE_CHARS) for lb in labels[i]]
              for i in range(n)]
    mo = Mosaic(rows, per * cols_img, panel, title_lines=Mosaic.lines_of([t for ts in titles for t in ts]),
                title_pt=TITLE_PT)
    for i in range(n):
        r, c = divmod(i, cols_img)
        image = resize(np.clip(np.asarray(images[i], dtype=np.float32), 0, 1), mo.panel)
        mo.put(r, c * per, image)
        for j in range(k):
            heat = colorize(resize(display_scale(maps[i][j]), mo.panel), cmap, 0.0, 1.0)
            mo.put(r, c * per + 1 + j, blend(image, heat, alpha))
            if masks is not None and masks[i] is not None:
                mo.outline_mask(r, c * per + 1 + j, masks[i])
        for j, t in enumerate(titles[i]):
            mo.title(r, c * per + j, t)
    fig = mo.figure(str(title), right_in=0.9)
    h_in = mo.height / mo.dpi
    mo.colorbar((mo.width / mo.dpi + 0.12, 0.1 * h_in, 0.14, 0.8 * h_in), cmap, 0.0, 1.0,
                "map (min-max scaled per panel)")
    if prov is not None:
        add_provenance(fig, prov)
    return fig
