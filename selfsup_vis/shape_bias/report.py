"""model-vs-human's shape-bias matrix plot from CSV directories as one function.

``plot_from_csvs`` is the whole job (task=plot_shape_bias, task=shape_bias and
``selfsup-vis-plot-shape-bias``, selfsup_vis/cli/plot_shape_bias.py, call it): read and validate the CSVs (found by their header;
a model is a (subj, file) pair, see ``analysis.model_labels``), pick the models
(plus the pooled humans when subject CSVs are present, drawn last), compute the numbers,
write ``shape_bias.csv`` + ``summary.json`` and the figure as PDF and PNG.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup_vis.data.cue_conflict_categories import CATEGORIES
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.shape_bias.analysis import (
    DEFAULT_PATTERN,
    HUMANS,
    build_groups,
    is_human,
    mean_of_subjects,
    model_labels,
    read_csv_dirs,
    summary_table,
)
from selfsup_vis.shape_bias.download import DownloadError, cached_icons_dir, fetch_icons
from selfsup_vis.shape_bias.error_consistency import (
    consistency_with_humans,
    humans_among_themselves,
)
from selfsup_vis.shape_bias.plots import (
    apply_styles,
    find_icons,
    plot_error_consistency,
    plot_shape_bias_boxplot,
    plot_shape_bias_matrix,
)
from selfsup_vis.utils.io import write_json, write_with

log = logging.getLogger(__name__)
FIGURE_STEM = "cue-conflict_shape-bias_matrixplot"


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` and prove it writable before any work, so nothing is half-written."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"result directory {path} is not writable: {e}") from e
    return path


def resolve_icons(icons_dir: str | Path | None, download: bool = False) -> dict[str, Path]:
    """Icons from ``icons_dir``, else the download cache, else (if allowed) a download;
    categories without an icon are drawn as text labels."""
    if icons_dir is None:
        icons_dir = cached_icons_dir()
        if icons_dir is None and download:
            try:
                icons_dir = fetch_icons()
            except DownloadError as e:
                log.warning("icons not available, drawing category names instead: %s", e)
    elif not Path(icons_dir).is_dir():
        raise FileNotFoundError(f"icons_dir not found: {icons_dir}")
    icons = find_icons(icons_dir, CATEGORIES)
    if icons_dir is not None and len(icons) < len(CATEGORIES):
        log.warning("icons missing in %s for %s; drawing their names", icons_dir,
                    sorted(set(CATEGORIES) - set(icons)))
    return icons


def plot_from_csvs(
    csv_dirs: Sequence[str | Path],
    result_dir: str | Path,
    models: Sequence[str] | None = None,
    plotting_names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    markers: Sequence[str] | None = None,
    icons_dir: str | Path | None = None,
    include_humans: bool = True,
    download_icons: bool = False,
    formats: Sequence[str] = ("pdf", "png"),
    pattern: str = DEFAULT_PATTERN,
    loggers: Sequence[Any] = (),
    provenance: Any = None,
) -> dict[str, Any]:
    """Read the CSVs, draw the matrix plot, write the numbers; returns the summary.
    ``provenance`` (a ``checkpoints.provenance.Provenance``) is completed with the CSV files
    read and drawn as the figure's footer."""
    if not csv_dirs:
        raise ValueError("no CSV directories given (task.csv_dirs / --csv-dir)")
    result_dir = ensure_writable_dir(result_dir)
    df = read_csv_dirs(csv_dirs, pattern)
    # the 16 cue-conflict categories, or the data's own (e.g. the synthetic set's CSVs)
    shapes = set(df["shape"])
    categories = list(CATEGORIES) if shapes <= set(CATEGORIES) else sorted(shapes)
    groups = build_groups(df, models, plotting_names, categories, include_humans)
    apply_styles(groups, colors, markers)
    icons = resolve_icons(icons_dir, download_icons) if categories == list(CATEGORIES) else {}
    if provenance is not None:
        provenance = provenance.replace(sources=sorted({str(f) for f in df["file"]}),
                                        model=", ".join(g.name for g in groups), n=len(df))
    outputs = write_shape_bias_outputs(df, groups, categories, result_dir, FIGURE_STEM, formats,
                                       icons, provenance, loggers)
    summary: dict[str, Any] = {
        "csv_dirs": [str(d) for d in csv_dirs],
        "categories": categories,
        "models": {g.name: {
            "shape_bias": g.shape_bias,
            "shape_bias_per_category": g.per_category,
            "shape_accuracy": g.stats["shape_accuracy"],
            "texture_accuracy": g.stats["texture_accuracy"],
            "counts": {k: v for k, v in g.stats.items() if k.startswith("num_")},
            "decisions": g.decisions,
            "flags": g.flags,
            "subjects": g.subjects,
            "files": g.files,
            "color": list(g.color), "marker": g.marker,
        } for g in groups},
        "icons": bool(icons),
        **outputs,
    }
    humans = [g for g in groups if g.name == HUMANS]
    if humans:
        summary["humans_mean_of_subjects"] = mean_of_subjects(
            df, [s for s in humans[0].subjects if is_human(s)], categories)
    if provenance is not None:
        summary.update(weights=provenance.weights, provenance=provenance.to_dict(), status="success")
    write_json(result_dir / "summary.json", summary)
    for g in groups:
        log.info("shape bias %-24s %.4f", g.name, g.shape_bias)
    log.info("matrix plot: %s", summary["files"][0])
    return summary


def write_shape_bias_outputs(df: Any, groups: Sequence[Any], categories: Sequence[str],
                             result_dir: Path, stem: str, formats: Sequence[str],
                             icons: dict[str, Path], provenance: Any = None,
                             loggers: Sequence[Any] = ()) -> dict[str, Any]:
    """The figures and tables every shape-bias result gets (task=shape_bias and
    task=plot_shape_bias alike): the matrix plot, model-vs-human's box plot, error consistency
    with each human subject when subject CSVs are present, ``shape_bias.csv``; figures to the
    loggers with the scalars. Returns ``files``, ``warnings`` and ``error_consistency``."""
    figures: list[tuple[str, str, Any]] = [  # (file stem, logger key, figure)
        (stem, "matrixplot", plot_shape_bias_matrix(groups, categories, icons)),
        ("cue-conflict_shape-bias_boxplot", "boxplot", plot_shape_bias_boxplot(groups, categories)),
    ]
    models = [g for g in groups if g.name != HUMANS]
    human_subjects = next((g.subjects for g in groups if g.name == HUMANS), [])
    consistency: dict[str, Any] = {}
    if human_subjects and models and categories == list(CATEGORIES):
        labelled = df.assign(model=model_labels(df, warn=False))
        results = consistency_with_humans(labelled, {g.name: g.subjects for g in models},
                                          human_subjects)
        among = humans_among_themselves(labelled, human_subjects)
        consistency = {**{n: r.to_dict() for n, r in results.items()}, HUMANS: among.to_dict()}
        figures.append(("cue-conflict_error-consistency", "error_consistency", plot_error_consistency(
            results, among, {g.name: g for g in groups})))
        for n, r in results.items():
            log.info("error consistency %-24s κ=%.4f (mean over %d human subjects)", n,
                     r.mean_kappa, len(r.per_subject))
    files: list[str] = []
    for name, key, fig in figures:
        if provenance is not None:
            add_provenance(fig, provenance)
        files += [str(p) for p in save_figure(fig, result_dir / name, formats)]
        if loggers:
            log_figure(loggers, f"shape_bias/{key}", fig)
    table = summary_table(groups, categories)
    write_with(result_dir / "shape_bias.csv", lambda tmp: table.to_csv(tmp, index=False))
    files.append(str(result_dir / "shape_bias.csv"))
    if loggers:
        log_scalars(loggers, {f"shape_bias/{g.name}": g.shape_bias for g in groups
                              if not math.isnan(g.shape_bias)})
        log_scalars(loggers, {f"error_consistency/{n}": r["error_consistency_mean"]
                              for n, r in consistency.items()})
    return {"files": files, "error_consistency": consistency,
            "warnings": {g.name: g.flags for g in groups if g.flags}}
