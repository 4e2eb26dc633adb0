"""The summary of a sweep (a Hydra multirun directory): one row per job — overrides, status
(done / failed + the first error line), headline numbers — as CSV, Markdown and the sweep's
``report.html``, with plots across the swept keys. Failed jobs are rows, not gaps."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup_vis.plotting.log import new_figure, save_figure
from selfsup_vis.report.headline import headline_metrics
from selfsup_vis.report.provenance import package_version
from selfsup_vis.report.render import REPORT, FigureItem, embed_figures, environment
from selfsup_vis.report.rundir import RunDir, first_line
from selfsup_vis.report.tables import fmt
from selfsup_vis.utils.io import write_json, write_text, write_with

log = logging.getLogger(__name__)

CSV_NAME = "sweep_summary.csv"
MD_NAME = "sweep_summary.md"
JSON_NAME = "sweep_summary.json"
#: the line the harness logs for a failed task, read back when a job has no status.json
FAILED_LINE = re.compile(r"task=\S+ failed: (.*)$")


@dataclass
class JobRow:
    job: str
    path: Path
    overrides: list[str]
    status: str
    error: str | None
    task: str | None
    metrics: dict[str, float] = field(default_factory=dict)

    def override_map(self) -> dict[str, str]:
        out = {}
        for o in self.overrides:
            key, sep, value = o.partition("=")
            if sep:
                out[key.lstrip("+~")] = value
        return out


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _error_from_log(job_dir: Path) -> str | None:
    for log_file in sorted(job_dir.glob("*.log")):
        try:
            lines = log_file.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if m := FAILED_LINE.search(line):
                return m.group(1).strip()
    return None


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in (".hydra", "status.json", "summary.json"))


def collect_jobs(sweep_dir: str | Path) -> list[JobRow]:
    """Every job directory of ``sweep_dir`` (Hydra's ``<n>_<overrides>`` subdirs), in job order."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"task.sweep_dir: no such directory: {root}")
    rows = []
    for d in sorted((p for p in root.iterdir() if is_job_dir(p)), key=lambda p: _natural(p.name)):
        run = RunDir.read(d)
        status, error = run.state()
        if status in ("failed", "incomplete") and not (run.status or {}).get("error"):
            error = _error_from_log(d) or error
        rows.append(JobRow(d.name, d, run.overrides, status, first_line(error), run.task,
                           headline_metrics(run.summary)))
    return rows


def swept_keys(rows: list[JobRow]) -> list[str]:
    """Override keys whose values differ between jobs (in first-seen order)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.override_map() if k not in keys]
    return [k for k in keys if len({r.override_map().get(k) for r in rows}) > 1]


def job_label(row: JobRow, keys: list[str]) -> str:
    m = row.override_map()
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={m.get(k, '—')}" for k in keys) or row.job


def _metric_columns(rows: list[JobRow]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r.metrics if k not in cols]
    return cols


def table_rows(rows: list[JobRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one dict per job: job, status, error, swept keys, overrides, task, metrics."""
    keys = swept_keys(rows)
    metrics = _metric_columns(rows)
    columns = ["job", "status", "error", *keys, "overrides", "task", *metrics]
    out = []
    for r in rows:
        m = r.override_map()
        rec = {"job": r.job, "status": r.status, "error": r.error or "", **{k: m.get(k, "") for k in keys},
               "overrides": " ".join(r.overrides), "task": r.task or "",
               **{k: r.metrics.get(k) for k in metrics}}
        out.append(rec)
    return columns, out


def _markdown(columns: list[str], records: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ") if v not in ("", None) else ""

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(rec.get(c)) for c in columns) + " |" for rec in records]
    return "\n".join(lines) + "\n"


def _loss_curve(job_dir: Path) -> tuple[list[float], list[float]] | None:
    path = job_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    steps, losses = [], []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            v = rec.get("train/loss_step") or rec.get("train/loss")
            if v not in (None, "") and rec.get("step") not in (None, ""):
                steps.append(float(rec["step"]))
                losses.append(float(v))
    return (steps, losses) if steps else None


def sweep_figures(rows: list[JobRow], out_dir: Path) -> list[Path]:
    """Per-layer metrics by layer (one line per job), scalar metrics by job, loss curves."""
    keys = swept_keys(rows)
    labels = {r.job: job_label(r, keys) for r in rows}
    files: list[Path] = []
    per_layer: dict[str, list[str]] = {}
    scalars: list[str] = []
    for col in _metric_columns(rows):
        base, sep, layer = col.partition("/")
        if sep and base not in ("shape_bias", "run"):
            per_layer.setdefault(base, [])
            if layer not in per_layer[base]:
                per_layer[base].append(layer)
        else:
            scalars.append(col)
    for metric, layers in per_layer.items():
        fig = new_figure(max(5.0, 1.2 * len(layers) + 3), 3.8)
        ax = fig.add_subplot()
        for r in rows:
            ys = [r.metrics.get(f"{metric}/{la}", math.nan) for la in layers]
            if not all(math.isnan(y) for y in ys):
                ax.plot(range(len(layers)), ys, marker="o", label=labels[r.job])
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by layer across the sweep")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        files += save_figure(fig, out_dir / f"sweep_{_safe(metric)}_by_layer")
    for metric in scalars:
        have = [r for r in rows if not math.isnan(r.metrics.get(metric, math.nan))]
        if not have:
            continue
        fig = new_figure(max(5.0, 0.6 * len(have) + 3), 3.8)
        ax = fig.add_subplot()
        ax.bar(range(len(have)), [r.metrics[metric] for r in have], color="#4472c4")
        ax.set_xticks(range(len(have)), [labels[r.job] for r in have], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} across the sweep")
        ax.grid(alpha=0.3, axis="y")
        files += save_figure(fig, out_dir / f"sweep_{_safe(metric)}")
    curves = {r.job: c for r in rows if (c := _loss_curve(r.path))}
    if curves:
        fig = new_figure(6.5, 3.8)
        ax = fig.add_subplot()
        for job, (steps, losses) in curves.items():
            ax.plot(steps, losses, label=labels[job], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("train/loss")
        ax.set_title("training loss across the sweep")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        files += save_figure(fig, out_dir / "sweep_loss_curves")
    return files


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("@", "_at"))


def summarize_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None,
                    max_bytes: int = 20_000_000) -> dict[str, Any]:
    """Collect the jobs of ``sweep_dir`` and write the CSV, Markdown, figures and report.html
    into ``out_dir`` (default: the sweep directory). Returns the summary (also sweep_summary.json)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    rows = collect_jobs(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"task.sweep_dir: {sweep_dir} holds no job directories "
                                "(subdirectories with .hydra/, status.json or summary.json)")
    columns, records = table_rows(rows)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows({k: ("" if v is None else v) for k, v in rec.items()} for rec in records)

    files = [write_with(out / CSV_NAME, write_csv), write_text(out / MD_NAME, _markdown(columns, records))]
    figures = sweep_figures(rows, out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = {
        "task": "summarize",
        "sweep_dir": str(sweep_dir.resolve()),
        "n_jobs": len(rows),
        "counts": counts,
        "swept_keys": swept_keys(rows),
        "columns": columns,
        "jobs": [{**rec, "path": str(r.path.resolve())} for rec, r in zip(records, rows)],
        "figures": [str(p.resolve()) for p in figures],
        "files": [str(p.resolve()) for p in files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / JSON_NAME, summary)
    report = render_sweep_summary(summary, out, max_bytes)
    summary["report"] = str(report.resolve())
    return summary


def render_sweep_summary(summary: Mapping[str, Any], out_dir: Path, max_bytes: int = 20_000_000) -> Path:
    """The sweep's report.html in ``out_dir`` from a summary made by :func:`summarize_sweep`."""
    out_dir = Path(out_dir)
    figures = [Path(p) for p in summary.get("figures", []) if Path(p).is_file()]
    items: list[FigureItem] = []
    for p in figures:
        (item,), _ = embed_figures([p], p.parent, max_bytes // max(1, len(figures)))
        item.rel = os.path.relpath(p, out_dir)
        items.append(item)
    columns = [c for c in summary.get("columns", []) if c not in ("path",)]
    rows = []
    for job in summary.get("jobs", []):
        report = Path(job["path"]) / REPORT
        rows.append({"job": job["job"], "status": job["status"], "error": job.get("error"),
                     "report": os.path.relpath(report, out_dir) if report.is_file() else None,
                     "cells": {c: fmt(job.get(c)) if job.get(c) not in ("", None) else "" for c in columns}})
    html = environment().get_template("sweep.html.j2").render(
        version=package_version(), generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        sweep_name=Path(summary["sweep_dir"]).name, sweep_dir=summary["sweep_dir"],
        n_jobs=summary.get("n_jobs", len(rows)), counts=summary.get("counts", {}),
        columns=columns, rows=rows, figures=items, csv_name=os.path.relpath(Path(summary["sweep_dir"]) / CSV_NAME, out_dir)
        if not (out_dir / CSV_NAME).is_file() else CSV_NAME,
        md_name=MD_NAME if (out_dir / MD_NAME).is_file() else os.path.relpath(Path(summary["sweep_dir"]) / MD_NAME, out_dir))
    return write_text(out_dir / REPORT, html)
