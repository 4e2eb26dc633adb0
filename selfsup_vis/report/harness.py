"""What the task harness (``tasks.common.run_task``) does at the end of every run, success or
failure: the headline numbers and the config from summary.json to the loggers, then
report.html. Rank zero only; nothing here may raise into the harness."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from selfsup_vis.report.headline import headline_metrics
from selfsup_vis.report.html import build_run_report
from selfsup_vis.report.loggers import log_run_results
from selfsup_vis.report.rundir import read_json

log = logging.getLogger(__name__)


def finish_run(run_dir: Path, cfg: DictConfig, loggers: list[Logger], succeeded: bool,
               ended: bool = True) -> Path | None:
    """Log results to the (already built) loggers and write report.html; returns its path.
    An attempt that did not end the run (``ended`` False: interrupted or requeued, to be
    resumed) writes its report but leaves the hparams and results to the attempt that ends it,
    so a resumed run's loggers hold one set, the final one."""
    summary = read_json(Path(run_dir) / "summary.json")
    try:
        if ended:
            log_run_results(loggers, cfg, summary, headline_metrics(summary), succeeded)
    except Exception as err:
        log.warning("could not log the run's results to the loggers: %s", err)
    try:
        return build_run_report(run_dir)
    except Exception as err:
        log.warning("could not write report.html in %s: %s", run_dir, err, exc_info=True)
        return None
