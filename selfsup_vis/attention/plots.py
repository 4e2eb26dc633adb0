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
    image's name as its title, wrapped over lines rather than cut."""
    n = len(images)
    k = maps[0].shape[0] if n else 0
    per = 1 + k
    cols_img = block_columns(n, per, max_columns=max_cols)
    rows = math.ceil(n / cols_img)
    title_lines = max((wrap_label(str(x), TITLE_CHARS).count("\n") + 1 for x in names), default=1)
    fig = new_figure(PANEL_IN * per * cols_img + 0.9, (PANEL_IN + 0.16 * title_lines) * rows + 0.8)
    axes = fig.subplots(rows, per * cols_img, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols_img)
        a0 = axes[r, c * per]
        a0.imshow(images[i])
        a0.set_title(plain(wrap_label(str(names[i]), TITLE_CHARS)), fontsize=TITLE_PT)
        for j in range(k):
            m = masks[i] if masks is not None else None
            _overlay(axes[r, c * per + 1 + j], images[i], maps[i][j], alpha, cmap, labels[i][j], m)
    _colorbar(fig, list(axes.ravel()), cmap)
    fig.suptitle(plain(title), fontsize=8)
    if prov is not None:
        add_provenance(fig, prov)
    return fig
