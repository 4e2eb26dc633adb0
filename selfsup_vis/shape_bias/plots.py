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
# Colours for other models: Okabe-Ito / tab10 / Tol colours kept only where they are far from
# every reference colour (CIE76 ΔE ≥ MIN_REFERENCE_DISTANCE, tests/test_shape_bias_plot.py), so
# a user model is never read as SimCLR, ResNet-50, BagNet or the humans; user models also never
# get the references' round or diamond markers.
MIN_REFERENCE_DISTANCE = 25.0
_PALETTE: tuple[RGB, ...] = tuple(mcolors.to_rgb(c) for c in (
    "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442", "#17becf", "#9467bd", "#8c564b",
    "#bcbd22", "#44AA99", "#E377C2",
))
_MARKERS = ("s", "^", "v", "P", "X", "p", "h", "<", ">", "*")


def lab(color: RGB) -> np.ndarray:
    """sRGB in [0, 1] -> CIE L*a*b* (D65), for colour distances as people see them."""
    c = np.asarray(color, dtype=float)
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def color_distance(a: RGB, b: RGB) -> float:
    """CIE76 ΔE between two sRGB colours (≈ 2.3: just noticeable; ≥ 25: clearly different)."""
    return float(np.linalg.norm(lab(a) - lab(b)))


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
        marker = _MARKERS[k % len(_MARKERS)]
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
    # random-weight models: hollow markers, dashed line and the flag in the legend
    ordered = [g for g in groups if g.name != HUMANS] + [g for g in groups if g.name == HUMANS]
    for g in ordered:
        overall = 1 - g.shape_bias
        if not math.isnan(overall):
            ax.plot([overall, overall], [-1, num], color=g.color, linewidth=2, zorder=2,
                    linestyle="--" if g.random_weights else "-")
        xs = [1 - g.per_category.get(c, math.nan) for c in order]
        hollow = dict(facecolors="none", edgecolors=g.color, linewidths=2.5) if g.random_weights \
            else dict(color=g.color, edgecolors=PLOTTING_EDGE_COLOR, linewidths=0.02)
        ax.scatter(xs, range(num), marker=g.marker or "o", s=250, clip_on=False, zorder=3,
                   label=legend_label(g), **hollow)

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
                  fontsize=fontsize * 0.6, borderaxespad=0)
    warnings = [f"⚠ {g.name}: {f}" for g in ordered for f in g.flags if not f.startswith("RANDOM")]
    if warnings:
        fig.text(0.01, 0.005, "\n".join(warnings), fontsize=fontsize * 0.55, color="#B00020",
                 va="bottom", ha="left", parse_math=False)
    return fig


def legend_label(g: Group) -> str:
    """Name, shape bias, the decisions it rests on and the flags: what tells two models apart
    and says how much a number can be trusted."""
    value = "n/a" if math.isnan(g.shape_bias) else f"{g.shape_bias:.3f}"
    label = f"{g.name} ({value}; {g.decisions}/{g.stats['num_conflict']} decided)"
    if g.random_weights:
        label += "\n" + next(f for f in g.flags if f.startswith("RANDOM"))
    if any(not f.startswith("RANDOM") for f in g.flags):
        label += " ⚠"
    return label


def plot_shape_bias_boxplot(groups: Sequence[Group], categories: Sequence[str] = CATEGORIES,
                            fontsize: float = 14) -> Figure:
    """model-vs-human's box plot: per decision maker, the spread of its per-category shape
    biases (one box per model, humans last), with the categories as points."""
    ordered = [g for g in groups if g.name != HUMANS] + [g for g in groups if g.name == HUMANS]
    data = [[v for c in categories if not math.isnan(v := g.per_category.get(c, math.nan))]
            for g in ordered]
    fig = Figure(figsize=(8, 1.2 + 0.6 * len(ordered)))
    ax = fig.add_axes((0.3, 0.18, 0.65, 0.72))
    ys = np.arange(len(ordered))
    filled = [i for i, d in enumerate(data) if d]
    box = ax.boxplot([data[i] for i in filled], positions=ys[filled], vert=False, widths=0.6,
                     patch_artist=True, showfliers=False, medianprops={"color": "black"})
    for patch, i in zip(box["boxes"], filled):
        g = ordered[i]
        patch.set_facecolor((*g.color, 0.15 if g.random_weights else 0.45))
        patch.set_edgecolor(g.color)
        patch.set_linestyle("--" if g.random_weights else "-")
    rng = np.random.default_rng(0)
    for i in filled:
        g = ordered[i]
        ax.scatter(data[i], i + rng.uniform(-0.15, 0.15, len(data[i])), s=14, color=g.color,
                   marker=g.marker or "o", zorder=3)
    ax.set_yticks(ys, [legend_label(g).replace("\n", " · ") for g in ordered],
                  fontsize=fontsize * 0.7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Shape bias per category (fraction of shape decisions)", fontsize=fontsize)
    ax.set_title("Shape bias across categories", fontsize=fontsize)
    for t in ax.get_yticklabels():
        t.set_parse_math(False)
    return fig


def plot_error_consistency(results: dict[str, Any], humans: Any, styles: dict[str, Group],
                           fontsize: float = 14) -> Figure:
    """Error consistency (Cohen's κ) of each model with each human subject: one point per
    subject, a bar at the mean; the humans' consistency among themselves as a band (the
    ceiling) and κ = 0 (independent errors) as a line."""
    names = list(results)
    fig = Figure(figsize=(8, 1.6 + 0.6 * len(names)))
    ax = fig.add_axes((0.3, 0.18, 0.65, 0.7))
    if humans is not None and humans.per_subject:
        ks = [c.kappa for c in humans.per_subject.values()]
        ax.axvspan(float(np.percentile(ks, 25)), float(np.percentile(ks, 75)), color=HUMAN_COLOR,
                   alpha=0.15, label="humans vs humans (IQR)")
        ax.axvline(humans.mean_kappa, color=HUMAN_COLOR, linewidth=2,
                   label=f"humans vs humans, mean κ={humans.mean_kappa:.3f}")
    ax.axvline(0.0, color="gray", linestyle=":", linewidth=1)
    for i, name in enumerate(names):
        g = styles[name]
        ks = [c.kappa for c in results[name].per_subject.values()]
        ax.scatter(ks, np.full(len(ks), i), color=g.color, marker=g.marker or "o", s=30, zorder=3,
                   facecolors="none" if g.random_weights else g.color)
        ax.plot([results[name].mean_kappa] * 2, [i - 0.3, i + 0.3], color=g.color, linewidth=3)
    ax.set_yticks(range(len(names)), [f"{n} (κ={results[n].mean_kappa:.3f})" + (
        " · RANDOM WEIGHTS" if styles[n].random_weights else "") for n in names],
        fontsize=fontsize * 0.7)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlim(min(-0.2, ax.get_xlim()[0]), 1)
    ax.set_xlabel("Error consistency with human subjects (Cohen's κ)", fontsize=fontsize)
    ax.set_title("Error consistency (Geirhos et al. 2020), per human subject", fontsize=fontsize)
    ax.legend(loc="lower right", fontsize=fontsize * 0.6)
    for t in ax.get_yticklabels():
        t.set_parse_math(False)
    return fig
