"""Figures of task=compare_embeddings: aligned maps side by side, quality by depth, CKA heatmaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from selfsup_vis.embedding.plots import class_colors, plot_embedding_grid
from selfsup_vis.plotting.log import new_figure

RANDOM_COLOR = "#d00000"
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("knn_feat@10", "kNN@10 accuracy, features"),
    ("knn_2d@10", "kNN@10 accuracy, 2-D map"),
    ("trustworthiness", "trustworthiness@10"),
)


def plot_aligned_panels(
    panels: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    quality: Mapping[str, Mapping[str, object]],
    random: Sequence[bool],
    *,
    title: str = "",
    footer: str | None = None,
    color_label: str | None = None,
    ncols: int | None = None,
) -> Figure:
    """One panel per (model, checkpoint), titled by it, all in the first panel's frame (the
    caller Procrustes-aligns them); titles of random-weight panels in red."""
    fig = plot_embedding_grid(panels, labels, class_names, quality, title=title, ncols=ncols,
                              footer=footer, color_label=color_label)
    for ax, is_random in zip(fig.axes, random):
        if is_random:
            ax.title.set_color(RANDOM_COLOR)
            ax.title.set_fontweight("bold")
    return fig


def plot_layer_curves(curves: Mapping[str, Sequence[tuple[str, Mapping[str, object]]]], *, title: str = "",
                      metrics: Sequence[tuple[str, str]] = CURVE_METRICS) -> Figure:
    """Quality by relative depth (0 = first layer compared, 1 = last), one line per model, one
    panel per metric; each point is labelled with its layer in the first panel."""
    fig = new_figure(4.2 * len(metrics) + 1.8, 3.8, dpi=130)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colors = class_colors(len(curves))
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for m, (name, points) in enumerate(curves.items()):
        depth = np.linspace(0.0, 1.0, len(points)) if len(points) > 1 else np.zeros(1)
        for ax, (key, label) in zip(axes, metrics):
            y = np.array([float(q.get(key, np.nan)) if q.get(key) is not None else np.nan for _, q in points])
            if len(points) == 1:  # a one-layer baseline (raw pixels): a level to beat at every depth
                ax.axhline(y[0], color=colors[m], linestyle="--", linewidth=1.2, label=name)
            else:
                ax.plot(depth, y, marker=markers[m % len(markers)], color=colors[m], label=name, linewidth=1.4,
                        markersize=4)
            ax.set_title(label, fontsize=9)
        for (layer, q), x in zip(points if len(points) > 1 else [], depth):
            v = q.get(metrics[0][0])
            if v is not None and np.isfinite(float(v)):
                axes[0].annotate(layer, (x, float(v)), fontsize=5.5, color=colors[m], xytext=(2, 3),
                                 textcoords="offset points")
    for ax in axes:
        ax.set_xlabel("relative depth (first → last layer compared)", fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_cka_heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], row_model: str,
                     col_model: str, *, title: str = "") -> Figure:
    """Linear CKA between every layer of two models, with the value in every cell."""
    m = np.asarray(matrix, dtype=float)
    fig = new_figure(1.2 + 0.62 * len(cols) + 1.2, 1.2 + 0.5 * len(rows), dpi=130)
    ax = fig.add_subplot()
    im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="magma", origin="lower", aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            ax.text(j, i, "nan" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(v) and v > 0.6 else "white")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
    ax.set_xlabel(col_model, fontsize=8)
    ax.set_ylabel(row_model, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.85, label="linear CKA")
    ax.set_title(title or f"linear CKA: {row_model} vs {col_model}", fontsize=9)
    return fig

