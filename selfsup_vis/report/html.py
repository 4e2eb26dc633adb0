"""``report.html`` of a run directory: self-contained (figures embedded as PNG data URIs,
Bokeh's JS inlined), built from the run directory alone so that it can be rebuilt later
(``python -m selfsup_vis.report <run_dir>``)."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.report.headline import headline_metrics
from selfsup_vis.report.interactive import EmbeddingTable, embedding_plots, resources_html
from selfsup_vis.report.provenance import package_version, run_provenance
from selfsup_vis.report.render import (
    DEFAULT_MAX_BYTES,
    REPORT,
    embed_figures,
    environment,
    human_size,
)
from selfsup_vis.report.rundir import RunDir
from selfsup_vis.report.summaries import HEADLINE_K
from selfsup_vis.report.sweep import render_sweep_summary
from selfsup_vis.report.tables import Table, fmt, summary_tables
from selfsup_vis.report.thumbnails import load_thumbnails
from selfsup_vis.utils.io import save_npy, write_text

log = logging.getLogger(__name__)

#: above this many points the interactive map shows a seeded sample (report_sample.npy)
REPORT_MAX_POINTS = 50_000


def _report_sample(summary: Mapping[str, Any]) -> np.ndarray | None:
    """Sorted seeded rows to show when the run has more than REPORT_MAX_POINTS points."""
    n = summary.get("n_samples")
    if not isinstance(n, int) or n <= REPORT_MAX_POINTS:
        return None
    seed = summary.get("seed") if isinstance(summary.get("seed"), int) else 0
    return np.sort(np.random.default_rng(seed).choice(n, REPORT_MAX_POINTS, replace=False))

def _read_embeddings(run: RunDir) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], list[str]] | None:
    """Per-layer coordinates from embedding_<layer>.csv (rows in the same order for all)."""
    summary = run.summary or {}
    layers = summary.get("layers") if isinstance(summary.get("layers"), Mapping) else {}
    files: dict[str, Path] = {}
    # the run's own maps: its manifest's (a previous run's layer is not this run's), else a glob
    found = ([p for p in run.data_files() if p.parent == run.path] if run.manifest is not None
             else list(run.path.glob("*.csv")))
    found = sorted(p for p in found if p.name.startswith("embedding_") and p.suffix == ".csv")
    for layer in layers:
        cand = run.path / f"embedding_{layer_file_name(layer)}.csv"
        if cand in found:
            files[layer] = cand
    for p in found:
        if p not in files.values():
            files[p.stem[len("embedding_"):]] = p
    if not files:
        return None
    coords, labels, paths, classes_by_label = {}, None, None, {}
    sample = _report_sample(summary)
    keep = None if sample is None else np.isin(np.arange(int(summary["n_samples"])), sample)
    for layer, p in files.items():
        with open(p, newline="") as f:
            rows = [r for i, r in enumerate(csv.DictReader(f)) if keep is None or (i < keep.size and keep[i])]
        lab = np.array([int(r["label"]) for r in rows])
        pth = [r["path"] for r in rows]
        if labels is None:
            labels, paths = lab, pth
        elif not np.array_equal(lab, labels) or pth != paths:
            log.warning("report: %s lists other points than the first layer; left out", p.name)
            continue
        classes_by_label.update({int(r["label"]): r["class"] for r in rows})
        coords[layer] = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32)
    assert labels is not None and paths is not None
    # the CSVs' label/class columns are the run's labeling (task.color_by), not always the
    # dataset's classes; runs written before they were list the dataset's, as summary.classes
    names = summary.get("classes") if "color_by" not in summary and isinstance(summary.get("classes"), list) else [
        classes_by_label.get(i, str(i)) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    return coords, labels, [str(c) for c in names], paths


def _interactive(run: RunDir, budget: int) -> dict[str, Any]:
    read = _read_embeddings(run)
    if read is None:
        return {"embeddings": [], "bokeh_js": "", "bokeh_script": "", "n_points": 0, "n_thumbnails": 0}
    coords, labels, classes, paths = read
    sample = _report_sample(run.summary or {})
    thumbs = load_thumbnails(run.path)
    n_points: int | str = len(paths)
    if sample is not None and len(sample) == len(paths):  # a seeded sample of a large run
        save_npy(run.path / "report_sample.npy", sample)
        new_row = {int(r): i for i, r in enumerate(sample)}
        thumbs = {new_row[r]: img for r, img in thumbs.items() if r in new_row}
        n_points = f"{len(paths)} (a seeded sample of {run.summary['n_samples']}, rows in report_sample.npy)"
    layers = (run.summary or {}).get("layers") or {}
    titles = {}
    for layer in coords:
        q = (layers.get(layer) or {}).get("quality", {}) if isinstance(layers, Mapping) else {}
        knn = q.get(f"knn_feat@{HEADLINE_K}")
        what = q.get("labeling", "label")
        titles[layer] = f"{layer} · colour: {what}" + (f" · kNN@{HEADLINE_K} (features) {fmt(knn)}"
                                                       if knn is not None else "")
    table = EmbeddingTable(coords, labels, classes, paths, thumbs)
    script, divs, n_thumbs = embedding_plots(table, titles, max_thumbnail_bytes=budget)
    return {"embeddings": [{"layer": la, "div": divs[la]} for la in coords],
            "bokeh_js": resources_html(), "bokeh_script": script,
            "n_points": n_points, "n_thumbnails": n_thumbs}


def build_run_report(run_dir: str | Path, error: str | None = None,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Write ``<run_dir>/report.html`` and return its path. ``error`` is the first line of the
    task's error when the harness calls this for a failed run."""
    run = RunDir.read(run_dir)
    if (run.summary or {}).get("task") == "summarize" and isinstance(run.summary.get("jobs"), list):
        return render_sweep_summary(run.summary, run.path, max_bytes)
    status, err = run.state(error)
    summary = run.summary or {}
    prov = run_provenance(run.config, summary)
    headline = headline_metrics(summary)
    budget = max_bytes - 2_000_000  # Bokeh's JS and the tables
    interactive = _interactive(run, budget // 2)
    figures, _ = embed_figures(run.figures(), run.path, budget - budget // 2 if interactive["embeddings"] else budget)
    config_path = run.path / "config_resolved.yaml"
    context = {
        "version": package_version(),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "task": run.task,
        "run_name": run.path.resolve().name,
        "run_dir": str(run.path.resolve()),
        "status": status,
        "error": err[:4000] if err else None,
        "traceback": "".join(summary.get("traceback") or []) if isinstance(summary.get("traceback"), list) else "",
        "provenance": prov,
        "provenance_table": Table("Provenance", ["key", "value"], [[k, fmt(v)] for k, v in prov.items()]),
        "headline": Table("Headline numbers", ["metric", "value"], [[k, fmt(v)] for k, v in headline.items()]),
        "tables": summary_tables({k: v for k, v in summary.items() if k not in ("traceback", "headline")}) if summary else [],
        "figures": figures,
        "data_files": [{"rel": p.relative_to(run.path).as_posix(), "size": human_size(p.stat().st_size)}
                       for p in run.data_files()],
        "config_text": config_path.read_text() if config_path.is_file() else "",
        **interactive,
    }
    html = environment().get_template("run.html.j2").render(**context)
    path = write_text(run.path / REPORT, html)
    log.info("report: %s (%.1f MB)", path, len(html) / 1e6)
    return path
