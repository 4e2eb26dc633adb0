"""model-vs-human's shape-bias matrix plot, on a ``Figure`` (Agg, no pyplot state).

Bottom axis: fraction of 'texture' decisions (0 -> 1); top axis: fraction of 'shape'
decisions (1 -> 0), so human-like models sit on the left. One row per shape category,
ordered by the humans' per-category texture fraction; the category icon (or its name)
left of each row. Per model or group a vertical line at its overall texture fraction and a
marker per category; the humans are drawn last.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.image as mimage
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from selfsup_vis.data.cue_conflict_categories import CATEGORIES, HUMAN_ROW_ORDER
from selfsup_vis.shape_bias.analysis import HUMANS, Group

RGB = tuple[float, float, float]


def rgb(r: float, g: float, b: float) -> RGB:
    return (r / 255.0, g / 255.0, b / 255.0)


#: model-vs-human's reference styles (examples/plotting_definition.py), keyed by normalised name.
REFERENCE_STYLES: dict[str, tuple[RGB, str]] = {
    "humans": (rgb(165, 30, 55), "D"),
    "resnet50": (rgb(65, 90, 140), "o"),
    "bagnet33": (rgb(110, 110, 110), "o"),
    "simclrresnet50x1": (rgb(210, 150, 0), "o"),
}
HUMAN_COLOR = REFERENCE_STYLES["humans"][0]
# Distinct colours for other models (Okabe-Ito / tab10 without the humans' red), then markers.
_PALETTE: tuple[RGB, ...] = tuple(mcolors.to_rgb(c) for c in (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
    "#8c564b", "#7f7f7f", "#bcbd22", "#17becf", "#9467bd", "#2ca02c",
))
_MARKERS = ("o", "s", "^", "v", "P", "X", "p", "h", "<", ">", "*")
PLOTTING_EDGE_COLOR = (0.3, 0.3, 0.3, 0.3)


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def default_styles(names: Sequence[str]) -> list[tuple[RGB, str]]:
    """A (colour, marker) per name: the reference style for humans / resnet50 / bagnet33 /
    simclr_resnet50x1, otherwise palette colours; beyond the palette the marker changes too, so
    any number of models stays distinguishable."""
    styles, k = [], 0
    for name in names:
        if _key(name) in REFERENCE_STYLES:
            styles.append(REFERENCE_STYLES[_key(name)])
            continue
        color = _PALETTE[k % len(_PALETTE)]
        marker = _MARKERS[(k // len(_PALETTE)) % len(_MARKERS)]
        styles.append((color, marker))
        k += 1
    return styles


def parse_colors(values: Sequence[Any] | None, n: int) -> list[RGB] | None:
    """User colours -> RGB in [0, 1]. Accepts a flat list of 0-255 numbers (3 per model, as
    MMSelfSup's ``--colors``), a list of [r, g, b] 0-255 triples, or colour strings
    (``'#a51e37'``, ``'tab:blue'``). ``None`` / empty -> ``None`` (use defaults)."""
    if not values:
        return None
    values = list(values)
    if all(isinstance(v, int | float) for v in values):
        if len(values) != 3 * n:
            raise ValueError(f"colors: {len(values)} numbers given for {n} model(s); expected "
                             f"{3 * n} (one R G B triple of 0-255 values per model)")
        values = [values[i:i + 3] for i in range(0, len(values), 3)]
    if len(values) != n:
        raise ValueError(f"colors: {len(values)} colours given for {n} model(s)")
    out = []
    for v in values:
        if isinstance(v, str):
            try:
                out.append(mcolors.to_rgb(v))
            except ValueError as e:
                raise ValueError(f"colors: {v!r} is not a colour") from e
            continue
        triple = list(v)
        if len(triple) != 3 or not all(isinstance(x, int | float) for x in triple):
            raise ValueError(f"colors: {v!r} is not an R G B triple")
        if not all(0 <= x <= 255 for x in triple):
            raise ValueError(f"colors: {v!r} has values outside 0-255")
        out.append(rgb(*triple))
    return out


def apply_styles(groups: Sequence[Group], colors: Sequence[Any] | None = None,
                 markers: Sequence[str] | None = None) -> None:
    """Fill ``color`` / ``marker`` of each group: user values for the models (in order),
    reference or default styles otherwise; the humans keep model-vs-human's style."""
    models = [g for g in groups if g.name != HUMANS]
    user_colors = parse_colors(colors, len(models))
    if markers and len(markers) != len(models):
        raise ValueError(f"markers: {len(markers)} given for {len(models)} model(s)")
    defaults = default_styles([g.subjects[0] if len(g.subjects) == 1 else g.name for g in models])
    for i, g in enumerate(models):
        g.color = user_colors[i] if user_colors else defaults[i][0]
        g.marker = markers[i] if markers else defaults[i][1]
    for g in groups:
        if g.name == HUMANS:
            g.color, g.marker = REFERENCE_STYLES["humans"]


def row_order(groups: Sequence[Group], categories: Sequence[str] = CATEGORIES) -> list[str]:
    """Bottom-to-top rows: by the humans' texture fraction when humans are present, else
    model-vs-human's published human order for the 16 categories, else by the mean texture
    fraction of the groups."""
    humans = [g for g in groups if g.name == HUMANS]
    if humans:
        values = [1 - humans[0].per_category.get(c, math.nan) for c in categories]
    elif set(categories) == set(HUMAN_ROW_ORDER):
        return list(HUMAN_ROW_ORDER)
    else:
        values = [float(np.nanmean([1 - g.per_category.get(c, math.nan) for g in groups]
                                   or [math.nan])) if any(
            not math.isnan(g.per_category.get(c, math.nan)) for g in groups) else math.nan
            for c in categories]
    keyed = [(math.inf if math.isnan(v) else v, i) for i, v in enumerate(values)]
    return [categories[i] for _, i in sorted(keyed)]


def find_icons(icons_dir: str | Path | None, categories: Sequence[str]) -> dict[str, Path]:
    """``<icons_dir>/<category>.png`` for the categories that have one."""
    if icons_dir is None:
        return {}
    icons_dir = Path(icons_dir)
    return {c: icons_dir / f"{c}.png" for c in categories if (icons_dir / f"{c}.png").is_file()}


def plot_shape_bias_matrix(
    groups: Sequence[Group],
    categories: Sequence[str] = CATEGORIES,
    icons: dict[str, Path] | None = None,
    order: Sequence[str] | None = None,
    fontsize: float = 20,
    figsize: tuple[float, float] = (15, 12),
    legend: bool = True,
) -> Figure:
    """Draw the matrix plot for styled groups (see ``apply_styles``); returns the Figure."""
    order = list(order or row_order(groups, categories))
    icons = icons or {}
    num = len(order)
    fig = Figure(figsize=figsize)
    ax = fig.add_axes((0.13, 0.1, 0.62, 0.78))

    # rows: icons (or names) left of the axis, dotted separators
    width = 1 / max(num, 16)
    left, right = -1.25 * width + width / 10, -0.25 * width - width / 10
    for i, cat in enumerate(order):
        if cat in icons:
            try:
                image = mimage.imread(str(icons[cat]))
            except (OSError, ValueError, SyntaxError):
                image = None
            if image is not None:
                ax.imshow(image, extent=(left, right, i - 0.4, i + 0.4), aspect="auto",
                          clip_on=False, zorder=1)
                continue
        ax.text(-0.015, i, cat, ha="right", va="center", fontsize=fontsize * 0.8, clip_on=False)
    for i in range(num - 1):
        ax.plot([0, 1], [i + 0.5, i + 0.5], c="gray", linestyle="dotted", alpha=0.4)

    # models, humans last; a vertical line at the overall texture fraction, one marker per row
    ordered = [g for g in groups if g.name != HUMANS] + [g for g in groups if g.name == HUMANS]
    for g in ordered:
        overall = 1 - g.shape_bias
        if not math.isnan(overall):
            ax.plot([overall, overall], [-1, num], color=g.color, linewidth=2, zorder=2)
        xs = [1 - g.per_category.get(c, math.nan) for c in order]
        ax.scatter(xs, range(num), color=g.color, marker=g.marker or "o", s=250, clip_on=False,
                   edgecolors=PLOTTING_EDGE_COLOR, linewidths=0.02, zorder=3,
                   label=f"{g.name} ({g.shape_bias:.3f})" if not math.isnan(g.shape_bias)
                   else f"{g.name} (n/a)")

    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, num - 0.5)
    ax.tick_params(axis="y", which="both", left=False, right=False, labelleft=False)
    ax.set_ylabel("Shape categories", labelpad=65 if icons else 100, fontsize=fontsize)
    ax.set_xlabel("Fraction of 'texture' decisions", fontsize=fontsize, labelpad=25)
    ax_top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    ax_top.set_xlabel("Fraction of 'shape' decisions", fontsize=fontsize, labelpad=25)
    ticks = np.round(np.arange(0, 1.01, 0.1), 1)
    ax.set_xticks(ticks)
    ax_top.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax_top.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="both", which="major", labelsize=fontsize * 0.8, length=10)
    ax_top.tick_params(axis="both", which="major", labelsize=fontsize * 0.8, length=10)
    # arrows under and over the axes: texture grows to the right, shape to the left
    arrow = dict(fc="black", head_width=0.4 * num / 16, head_length=0.03, clip_on=False,
                 length_includes_head=True, overhang=0.5)
    ax.arrow(0, -0.5 - 1.25 * num / 16, 1, 0, **arrow)
    ax.arrow(1, num - 0.5 + 1.25 * num / 16, -1, 0, **arrow)
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=True, labelspacing=1,
                  fontsize=fontsize * 0.7, borderaxespad=0)
    return fig
