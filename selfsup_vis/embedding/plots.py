"""Embedding scatter plots: one figure per layer, or all layers in one grid, same style.

Figures are plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state), so
they can be drawn from worker processes and callbacks. Up to 20 classes get 20 colours with no
near-identical pair (tab10, then colours chosen farthest apart in CIELAB; MMSelfSup used tab20,
whose light/dark pairs are hard to tell apart); beyond 20 the marker changes every 20 classes
and the colours repeat lightened or darkened. Float labels (a numeric labeling) are drawn with a
continuous colormap and a colorbar. The legend sits outside the axes; an optional footer states
what the figure was computed from (space, labeling, provenance); optional image thumbnails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfsup_vis.embedding.plots_large import (
    RASTERIZE_ABOVE,
    draw_density,
    point_style,
    use_density,
)
from selfsup_vis.embedding.quality import HEADLINE_K
from selfsup_vis.embedding.thumbnails import draw_thumbnails
from selfsup_vis.plotting.layout import block_columns
from selfsup_vis.plotting.text import plain

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
MAX_LEGEND_CLASSES = 30
PALETTE_SIZE = 20
# tab10, then ten colours picked greedily farthest (CIELAB ΔE76) from all before them on a
# 9-level RGB grid restricted to lightness 30-85 (visible on white): min pairwise ΔE ≈ 27.7
_DISTINCT20: tuple[tuple[float, float, float], ...] = tuple(
    tuple(c[:3]) for c in colormaps["tab10"].colors
) + (
    (0.0, 0.0, 1.0), (1.0, 0.125, 1.0), (0.0, 0.375, 1.0), (1.0, 0.75, 0.5), (0.375, 0.375, 0.0),
    (1.0, 0.0, 0.5), (0.625, 0.875, 0.625), (0.0, 0.875, 0.0), (0.0, 0.375, 0.25), (0.5, 0.0, 0.625),
)  # fmt: skip
CONTINUOUS_CMAP = "viridis"


def class_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (n, 3): the 20-colour palette without near-identical pairs;
    class i > 20 takes colour i mod 20 mixed towards white or black by an amount that grows
    with i // 20 (its marker differs too, see :func:`class_markers`), so no two are equal.
    """
    if n < 0:
        raise ValueError(f"class_colors: n must be >= 0, got {n}")
    base = np.asarray(_DISTINCT20, dtype=float)
    out = np.empty((n, 3))
    for i in range(n):
        block, c = divmod(i, PALETTE_SIZE)
        rgb = base[c]
        if block:
            amount = 0.12 * ((block + 1) // 2) / (1 + 0.3 * ((block + 1) // 2))  # < 0.4, grows
            target = 1.0 if block % 2 else 0.0
            rgb = rgb + (target - rgb) * amount
        out[i] = rgb
    return np.clip(out, 0.0, 1.0)


def class_markers(n: int) -> list[str]:
    """Marker per class: all circles up to 20 classes, then a new shape every 20 classes (with
    the colours, every (colour, marker) pair is different)."""
    if n <= PALETTE_SIZE:
        return ["o"] * n
    return [MARKERS[(i // PALETTE_SIZE) % len(MARKERS)] for i in range(n)]


def format_quality(quality: Mapping[str, object] | None) -> str:
    """Short one-line summary of the quality numbers for titles and corners, at the one k
    (``HEADLINE_K``) the headline, the ranking and report.html show too."""
    if not quality:
        return ""
    parts = []
    k = HEADLINE_K
    for key, label in (
        (f"knn_feat@{k}", f"kNN@{k} feat"),
        (f"knn_2d@{k}", f"kNN@{k} 2-D"),
        (f"knn_feat_r2@{k}", f"kNN-R²@{k} feat"),
        (f"knn_2d_r2@{k}", f"kNN-R²@{k} 2-D"),
        ("trustworthiness", "trust"),
        ("silhouette_2d", "silh."),
    ):
        v = quality.get(key)
        if isinstance(v, int | float) and np.isfinite(v):
            parts.append(f"{label} {v:.3f}")
    if quality.get("collapsed"):
        parts.insert(0, "COLLAPSED FEATURES (all rows nearly identical)")
    return "  ".join(parts)


def _is_numeric(labels: np.ndarray | None) -> bool:
    return labels is not None and np.issubdtype(np.asarray(labels).dtype, np.floating)


def _scatter(
    ax,
    coords: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    colors: np.ndarray,
    markers: list[str],
    classes: np.ndarray,
    density: bool | None = None,
) -> list:
    """Draw one embedding; returns the legend handles (one per class), or for float labels
    the one colour-mapped collection (for a colorbar). Large N: rasterised layers, smaller and
    fainter markers, or a density image (``density``; None = automatic, see plots_large)."""
    coords = np.asarray(coords)
    size, alpha = point_style(len(coords))
    raster = len(coords) > RASTERIZE_ABOVE
    handles = []
    if labels is not None and not _is_numeric(labels) and use_density(len(coords), density):
        draw_density(ax, coords, np.searchsorted(classes, labels), colors)
        return [ax.scatter([], [], s=max(size, 4.0), color=colors[ci], marker=markers[ci],
                           label=_class_name(cls, class_names)) for ci, cls in enumerate(classes)]
    # draw in a seeded random order so no class systematically hides the others
    order = np.random.default_rng(0).permutation(len(coords))
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c=[colors[0]], linewidths=0, alpha=alpha,
                   rasterized=raster)
        return handles
    if _is_numeric(labels):
        values = np.asarray(labels, dtype=float)
        h = ax.scatter(coords[order, 0], coords[order, 1], s=size, c=values[order],
                       cmap=CONTINUOUS_CMAP, vmin=float(values.min()), vmax=float(values.max()),
                       linewidths=0, alpha=0.9 if alpha >= 0.8 else alpha, rasterized=raster)
        return [h]
    cls_index = np.searchsorted(classes, labels)
    for ci, cls in enumerate(classes):
        sel = order[cls_index[order] == ci]
        name = _class_name(cls, class_names)
        h = ax.scatter(
            coords[sel, 0],
            coords[sel, 1],
            s=size,
            color=colors[ci],
            marker=markers[ci],
            linewidths=0,
            alpha=alpha,
            label=name,
            rasterized=raster,
        )
        handles.append(h)
    return handles


def _class_name(cls, class_names: Sequence[str] | None) -> str:
    if (
        class_names is not None
        and isinstance(cls, int | np.integer)
        and 0 <= cls < len(class_names)
    ):
        return plain(class_names[int(cls)])
    return plain(cls)


def _style_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.6")


def _prepare(labels: np.ndarray | None, n: int):
    if labels is None or _is_numeric(labels):
        classes = np.arange(1)
        if labels is not None:
            labels = np.asarray(labels, dtype=float)
            if labels.shape != (n,) or not np.isfinite(labels).all():
                raise ValueError(f"numeric labels must be finite with shape ({n},), got {labels.shape}")
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match coords, got {labels.shape}")
        classes = np.unique(labels)
    return labels, classes, class_colors(len(classes)), class_markers(len(classes))


def _check_coords(coords: np.ndarray, what: str) -> np.ndarray:
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"{what} must have shape (N, 2), got {c.shape}")
    return c


def _legend(fig: Figure, ax, handles: list, n_classes: int, title: str | None = None) -> None:
    if not handles:
        return
    if n_classes > MAX_LEGEND_CLASSES:
        ax.text(
            1.02, 0.5, f"{n_classes} classes\n(legend omitted)", transform=ax.transAxes,
            va="center", ha="left", fontsize=8, color="0.3",
        )  # fmt: skip
        return
    ncol = 1 if n_classes <= 15 else 2
    leg = ax.legend(
        handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, ncol=ncol,
        frameon=False, markerscale=max(1.0, 6.0 / np.sqrt(handles[0].get_sizes()[0])),
        handletextpad=0.2, columnspacing=0.8, title=plain(title) if title else title, title_fontsize=7,
    )  # fmt: skip
    for h in leg.legend_handles:
        h.set_alpha(1.0)


def _legend_width(labels: np.ndarray | None, n_classes: int) -> float:
    if labels is None:
        return 0.0
    if _is_numeric(labels):
        return 1.0
    return 1.6 if n_classes <= 15 else 3.0


def _footer(fig: Figure, footer: str | None) -> None:
    if footer:
        fig.supxlabel(footer, fontsize=6.5, color="0.3")


def plot_embedding(
    coords: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None = None,
    title: str = "",
    quality: Mapping[str, object] | None = None,
    *,
    footer: str | None = None,
    color_label: str | None = None,
    thumbnails: tuple[np.ndarray, Sequence[np.ndarray]] | None = None,
    thumbnail_grid: int = 20,
    density: bool | None = None,
) -> Figure:
    """Scatter of one layer's 2-D embedding coloured by class (or by a float value, with a
    colorbar), with its quality numbers; ``footer`` under the axes (space, provenance);
    ``color_label`` names the labeling (legend title / colorbar label); ``thumbnails`` =
    (point indices, RGB images) from :func:`embedding.thumbnails.grid_pick` with the same
    ``thumbnail_grid``."""
    coords = _check_coords(coords, "coords")
    labels, classes, colors, markers = _prepare(labels, len(coords))
    numeric = _is_numeric(labels)
    n_classes = len(classes) if labels is not None and not numeric else 0
    legend_w = _legend_width(labels, n_classes)
    side = 8.0 if thumbnails is not None else 6.0
    fig = Figure(figsize=(side + legend_w, side), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = _scatter(ax, coords, labels, class_names, colors, markers, classes, density)
    _style_axes(ax)
    if thumbnails is not None:
        picked, images = thumbnails
        frames = None
        if labels is not None and not numeric:
            frames = colors[np.searchsorted(classes, labels[np.asarray(picked)])]
        draw_thumbnails(ax, coords, np.asarray(picked), images, thumbnail_grid, frames)
    if title:
        ax.set_title(plain(title), fontsize=10)
    q = format_quality(quality)
    if q:
        ax.text(
            0.01, 0.01, q, transform=ax.transAxes, fontsize=7, ha="left", va="bottom", zorder=5,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.85},
        )  # fmt: skip
    if numeric:
        fig.colorbar(handles[0], ax=ax, shrink=0.8, label=color_label or "value")
    else:
        _legend(fig, ax, handles, n_classes, color_label)
    _footer(fig, footer)
    return fig


def plot_embedding_grid(
    layers: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray | None,
    class_names: Sequence[str] | None = None,
    quality: Mapping[str, Mapping[str, object] | None] | None = None,
    *,
    title: str = "",
    ncols: int | None = None,
    footer: str | None = None,
    color_label: str | None = None,
    density: bool | None = None,
) -> Figure:
    """All layers' embeddings in one grid (same colours per class), one shared legend (or one
    colorbar for float labels) outside the axes, ``footer`` under them."""
    if not layers:
        raise ValueError("plot_embedding_grid: no layers given")
    n = len(layers)
    # a row up to 4 maps, then near-square: 5 maps are 3 + 2, not 4 + 1
    ncols = ncols or (n if n <= 4 else block_columns(n, max_columns=4))
    nrows = int(np.ceil(n / ncols))
    first = _check_coords(layers[0][1], f"coords of layer {layers[0][0]!r}")
    labels, classes, colors, markers = _prepare(labels, len(first))
    numeric = _is_numeric(labels)
    n_classes = len(classes) if labels is not None and not numeric else 0
    legend_w = _legend_width(labels, n_classes)
    fig = Figure(figsize=(3.6 * ncols + legend_w, 3.8 * nrows), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles: list = []
    for i, (layer, coords) in enumerate(layers):
        coords = _check_coords(coords, f"coords of layer {layer!r}")
        if len(coords) != len(first):
            raise ValueError(
                f"plot_embedding_grid: layer {layer!r} has {len(coords)} points, "
                f"expected {len(first)} like layer {layers[0][0]!r}"
            )
        ax = axes.flat[i]
        handles = _scatter(ax, coords, labels, class_names, colors, markers, classes, density)
        _style_axes(ax)
        ax.set_title(plain(layer), fontsize=9)
        q = format_quality((quality or {}).get(layer))
        if q:
            ax.set_xlabel(q.replace("  ", "\n", 1), fontsize=6.5)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(plain(title), fontsize=11)
    if numeric:
        fig.colorbar(handles[0], ax=axes.ravel().tolist(), shrink=0.8, label=color_label or "value")
    elif handles and n_classes <= MAX_LEGEND_CLASSES:
        ncol = 1 if n_classes <= 15 else 2
        leg = fig.legend(
            handles=handles, loc="outside right center", fontsize=7, ncol=ncol, frameon=False,
            markerscale=max(1.0, 6.0 / np.sqrt(handles[0].get_sizes()[0])),
            handletextpad=0.2, columnspacing=0.8, title=plain(color_label) if color_label else color_label, title_fontsize=7,
        )  # fmt: skip
        for h in leg.legend_handles:
            h.set_alpha(1.0)
    elif handles:
        fig.text(0.99, 0.5, f"{n_classes} classes\n(legend omitted)", ha="right", fontsize=8)
    _footer(fig, footer)
    return fig
