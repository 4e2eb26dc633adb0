"""Embedding scatter plots: one figure per layer, or all layers in one grid, same style.

Figures are plain ``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot state), so
they can be drawn from worker processes and callbacks. Classes keep distinct colours beyond 20
(MMSelfSup used tab20, whose colours repeat); beyond 20 classes the markers vary too.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
MAX_LEGEND_CLASSES = 30
_GOLDEN = 0.618033988749895


def class_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (n, 3): tab10 up to 10 classes (tab20 pairs a light and a dark
    shade of one hue, too close for few classes); else tab20, tab20b, tab20c, then golden-ratio
    hues with lightness and saturation cycling through three levels, so no two are equal.
    """
    if n < 0:
        raise ValueError(f"class_colors: n must be >= 0, got {n}")
    if n <= 10:
        return np.asarray([c[:3] for c in colormaps["tab10"].colors[:n]], dtype=float).reshape(n, 3)
    base: list[tuple[float, float, float]] = []
    for name in ("tab20", "tab20b", "tab20c"):
        base.extend(tuple(c[:3]) for c in colormaps[name].colors)
    colors = base[:n]
    i = 0
    while len(colors) < n:
        hue = (i * _GOLDEN) % 1.0
        light = (0.45, 0.62, 0.32)[(i // 7) % 3]
        sat = (0.85, 0.6, 0.95)[(i // 21) % 3]
        rgb = colorsys.hls_to_rgb(hue, light, sat)
        if all(np.abs(np.subtract(rgb, c)).max() > 1e-3 for c in colors):
            colors.append(rgb)
        i += 1
    return np.asarray(colors, dtype=float).reshape(n, 3)


def class_markers(n: int) -> list[str]:
    """Marker per class: all circles up to 20 classes, then cycling shapes."""
    if n <= 20:
        return ["o"] * n
    return [MARKERS[i % len(MARKERS)] for i in range(n)]


def format_quality(quality: Mapping[str, object] | None) -> str:
    """Short one-line summary of the quality numbers for titles and corners."""
    if not quality:
        return ""
    parts = []
    for key, label in (
        ("knn_feat@10", "kNN@10 feat"),
        ("knn_2d@10", "kNN@10 2-D"),
        ("trustworthiness", "trust"),
        ("silhouette_2d", "silh."),
    ):
        v = quality.get(key)
        if isinstance(v, int | float) and np.isfinite(v):
            parts.append(f"{label} {v:.3f}")
    return "  ".join(parts)


def _point_size(n: int) -> float:
    return float(np.clip(20000.0 / max(n, 1), 1.5, 25.0))


def _scatter(
    ax,
    coords: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    colors: np.ndarray,
    markers: list[str],
    classes: np.ndarray,
) -> list:
    """Draw one embedding; returns the legend handles (one per class)."""
    coords = np.asarray(coords)
    size = _point_size(len(coords))
    handles = []
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c=[colors[0]], linewidths=0, alpha=0.8)
        return handles
    # draw in a seeded random order so no class systematically hides the others
    order = np.random.default_rng(0).permutation(len(coords))
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
            alpha=0.8,
            label=name,
            rasterized=len(coords) > 5000,
        )
        handles.append(h)
    return handles


def _class_name(cls, class_names: Sequence[str] | None) -> str:
    if (
        class_names is not None
        and isinstance(cls, int | np.integer)
        and 0 <= cls < len(class_names)
    ):
        return str(class_names[int(cls)])
    return str(cls)


def _style_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.6")


def _prepare(labels: np.ndarray | None, n: int):
    if labels is None:
        classes = np.arange(1)
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


def _legend(fig: Figure, ax, handles: list, n_classes: int) -> None:
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
        handletextpad=0.2, columnspacing=0.8,
    )  # fmt: skip
    for h in leg.legend_handles:
        h.set_alpha(1.0)


def plot_embedding(
    coords: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str] | None = None,
    title: str = "",
    quality: Mapping[str, object] | None = None,
) -> Figure:
    """Scatter of one layer's 2-D embedding coloured by class, with its quality numbers."""
    coords = _check_coords(coords, "coords")
    labels, classes, colors, markers = _prepare(labels, len(coords))
    n_classes = len(classes) if labels is not None else 0
    legend_w = 0.0 if n_classes == 0 else (1.6 if n_classes <= 15 else 3.0)
    fig = Figure(figsize=(6.0 + legend_w, 6.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = _scatter(ax, coords, labels, class_names, colors, markers, classes)
    _style_axes(ax)
    if title:
        ax.set_title(title, fontsize=10)
    q = format_quality(quality)
    if q:
        ax.text(
            0.01, 0.01, q, transform=ax.transAxes, fontsize=7, ha="left", va="bottom",
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.85},
        )  # fmt: skip
    _legend(fig, ax, handles, n_classes)
    return fig


def plot_embedding_grid(
    layers: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray | None,
    class_names: Sequence[str] | None = None,
    quality: Mapping[str, Mapping[str, object] | None] | None = None,
    *,
    title: str = "",
    ncols: int | None = None,
) -> Figure:
    """All layers' embeddings in one grid (same colours per class), one shared legend."""
    if not layers:
        raise ValueError("plot_embedding_grid: no layers given")
    n = len(layers)
    ncols = ncols or min(n, 4)
    nrows = int(np.ceil(n / ncols))
    first = _check_coords(layers[0][1], f"coords of layer {layers[0][0]!r}")
    labels, classes, colors, markers = _prepare(labels, len(first))
    n_classes = len(classes) if labels is not None else 0
    legend_w = 0.0 if n_classes == 0 else (1.6 if n_classes <= 15 else 3.0)
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
        handles = _scatter(ax, coords, labels, class_names, colors, markers, classes)
        _style_axes(ax)
        ax.set_title(str(layer), fontsize=9)
        q = format_quality((quality or {}).get(layer))
        if q:
            ax.set_xlabel(q.replace("  ", "\n", 1), fontsize=6.5)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    if handles and n_classes <= MAX_LEGEND_CLASSES:
        ncol = 1 if n_classes <= 15 else 2
        leg = fig.legend(
            handles=handles, loc="outside right center", fontsize=7, ncol=ncol, frameon=False,
            markerscale=max(1.0, 6.0 / np.sqrt(handles[0].get_sizes()[0])),
            handletextpad=0.2, columnspacing=0.8,
        )  # fmt: skip
        for h in leg.legend_handles:
            h.set_alpha(1.0)
    elif handles:
        fig.text(0.99, 0.5, f"{n_classes} classes\n(legend omitted)", ha="right", fontsize=8)
    return fig
