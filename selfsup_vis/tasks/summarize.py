"""task=summarize: the sweep summary of ``task.sweep_dir`` — one row per job (overrides,
status with the first error line, headline numbers) as CSV + Markdown + report.html, and plots
across the swept keys, written into the sweep directory (or ``task.output_dir``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from selfsup_vis.report.summaries import SweepSummary
from selfsup_vis.report.sweep import summarize_sweep
from selfsup_vis.tasks.common import TaskRun, is_global_zero

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    sweep_dir = Path(t.sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"task.sweep_dir={t.sweep_dir}: no such directory")
    if not is_global_zero():
        return {}
    sweep = summarize_sweep(sweep_dir, Path(t.output_dir) if t.output_dir else sweep_dir,
                            max_bytes=int(float(t.max_report_mb) * 1e6))
    summary = SweepSummary(**{k: v for k, v in sweep.items() if k != "task"})
    log.info("sweep summary of %d jobs (%s): %s", summary.n_jobs,
             ", ".join(f"{v} {k}" for k, v in summary.counts.items()), summary.report)
    return run.write_summary(summary)
