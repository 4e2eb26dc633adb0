"""task=plot_shape_bias: model-vs-human's shape-bias matrix plot from CSV directories
(the work is ``selfsup_vis.shape_bias.report.plot_from_csvs``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from selfsup_vis.checkpoints.provenance import Provenance
from selfsup_vis.report.summaries import PlotShapeBiasSummary
from selfsup_vis.shape_bias.report import plot_from_csvs
from selfsup_vis.tasks.common import TaskRun, is_global_zero


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    if not is_global_zero():
        return {}
    prov = run.set_provenance(Provenance(
        task="plot_shape_bias", model=", ".join(t.models) or "every model in the CSVs",
        weights="none (model decisions read from CSV files)", dataset="cue-conflict CSVs",
        sources=[str(d) for d in t.csv_dirs]))
    loggers = run.loggers
    colors = OmegaConf.to_container(t.colors, resolve=True) if t.colors else None
    result = plot_from_csvs(
        csv_dirs=list(t.csv_dirs),
        result_dir=t.result_dir or run.dir,
        models=list(t.models) or None,
        plotting_names=list(t.plotting_names) or None,
        colors=colors,
        markers=list(t.markers) or None,
        icons_dir=t.icons_dir,
        include_humans=t.include_humans,
        download_icons=t.download_icons,
        formats=list(t.formats),
        pattern=t.csv_pattern,
        loggers=loggers,
        provenance=prov,
    )
    # the run's summary.json: the same keys, typed and with its headline (every model's shape bias)
    return run.write_summary(PlotShapeBiasSummary(
        **{f.name: result[f.name] for f in fields(PlotShapeBiasSummary) if f.name in result}))
