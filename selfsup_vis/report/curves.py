"""Loss and learning-rate curves of a training run, read back from its CSV metrics.

The CSV logger (``logger=csv``, the default, or ``many``) writes every logged scalar to
``<run>/csv/metrics.csv``, one row per logging call with empty cells for the other columns;
Lightning's ``LearningRateMonitor`` adds ``lr-<Optimizer>[/pg<i>]`` columns. A requeued job
appends to the same file (``attempt`` column), so a step can appear twice: the last value of a
step wins, as in the run that is being continued. The figure goes into the run directory
(``training_curves.png``, which report.html embeds) with the numbers beside it
(``training_curves.csv``: step, series, value).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure

from selfsup_vis.plotting.log import new_figure
from selfsup_vis.plotting.text import plain
from selfsup_vis.utils.io import write_csv

__all__ = ["Curves", "curves_figure", "read_training_curves", "write_curves_csv"]

#: series name -> (steps, values), steps increasing
Curves = dict[str, tuple[list[float], list[float]]]


def _is_loss(column: str) -> bool:
    leaf = column.rsplit("/", 1)[-1]
    return leaf == "loss" or leaf.startswith("loss_") or leaf.endswith("_loss")


def _is_lr(column: str) -> bool:
    return column.startswith("lr-") or column.rsplit("/", 1)[-1] in ("lr", "learning_rate")


def read_training_curves(metrics_csv: str | Path) -> tuple[Curves, Curves]:
    """(loss curves, learning-rate curves) by column name from a CSV logger's metrics.csv.
    Rows without a ``step`` or with a non-finite value are skipped."""
    per: dict[str, dict[float, float]] = {}
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in (reader.fieldnames or []) if _is_loss(c) or _is_lr(c)]
        for rec in reader:
            step = rec.get("step")
            if step in (None, ""):
                continue
            for col in columns:
                value = rec.get(col)
                if value in (None, ""):
                    continue
                v = float(value)
                if math.isfinite(v):
                    per.setdefault(col, {})[float(step)] = v  # a requeued step: the last wins
    series = {c: (sorted(d), [d[s] for s in sorted(d)]) for c, d in per.items()}
    loss = {c: s for c, s in series.items() if _is_loss(c)}
    lr = {c: s for c, s in series.items() if _is_lr(c)}
    return loss, lr


def _merge_identical(curves: Curves) -> Curves:
    """Parameter groups with the same schedule (``lr-AdamW/pg1``, ``/pg2``) drawn once, named
    together, so a legend does not list the same line twice."""
    out: Curves = {}
    names: dict[tuple, list[str]] = {}
    for name, (steps, values) in curves.items():
        names.setdefault((tuple(steps), tuple(values)), []).append(name)
    for (steps, values), group in names.items():
        label = group[0] if len(group) == 1 else f"{group[0]} (= {', '.join(g.rsplit('/', 1)[-1] for g in group[1:])})"
        out[label] = (list(steps), list(values))
    return out


def curves_figure(loss: Curves, lr: Curves, title: str = "training") -> Figure:
    """Loss (log scale when it spans more than a decade) beside the learning rate, against
    the optimizer step; one point is drawn as a marker, a curve as a line."""
    panels = [(name, c) for name, c in (("loss", loss), ("learning rate", _merge_identical(lr))) if c]
    fig = new_figure(4.2 * max(1, len(panels)) + 0.6, 3.4)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (what, curves) in zip(axes, panels):
        for name, (steps, values) in curves.items():
            ax.plot(steps, values, lw=1.3, marker="o" if len(steps) < 3 else None, ms=3, label=plain(name))
        every = [v for _, vals in curves.values() for v in vals]
        if what == "loss" and min(every) > 0 and max(every) / min(every) > 10:
            ax.set_yscale("log")
        elif what == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.set_title(plain(f"{title}: {what}"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if not panels:
        axes[0].text(0.5, 0.5, "no loss or learning-rate column in the CSV metrics", ha="center",
                     va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    return fig  # constrained layout (new_figure)


def write_curves_csv(path: str | Path, loss: Curves, lr: Curves) -> Path:
    """The numbers behind the figure, long format (step, series, value), written atomically."""
    return write_csv(path, ["step", "series", "value"],
                     [[int(s) if float(s).is_integer() else s, name, repr(v)]
                      for name, (steps, values) in {**loss, **lr}.items() for s, v in zip(steps, values)])
