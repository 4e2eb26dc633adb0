"""A Hydra callback that keeps a multirun's sweep summary (table, plots, report.html) in the
sweep directory up to date: after every job and at the end of the multirun.

Hydra skips ``on_multirun_end`` when a job failed (its sweeper re-raises the job's error
first), so the summary is also refreshed in ``on_job_end`` (the last job leaves it complete)
and, as a last resort, when the sweeping process exits. Registered in ``conf/config.yaml``
under ``hydra.callbacks``; it never fails a job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from selfsup_vis.report.sweep import summarize_sweep
from selfsup_vis.utils.exit_hooks import at_exit

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sweep_dir: str | None = None
        self._announced = False

    def _summarize(self, sweep_dir: str, announce: bool) -> None:
        try:
            summary = summarize_sweep(Path(sweep_dir))
        except Exception as err:  # a summary must never fail the sweep
            log.warning("sweep summary of %s failed: %s", sweep_dir, err)
            return
        if announce and not self._announced:
            self._announced = True
            counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
            print(f"sweep summary ({counts}): {summary['report']}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            self._sweep_dir = str(config.hydra.sweep.dir)
            at_exit(self._at_exit)

    def _at_exit(self) -> None:
        if self._sweep_dir is not None and not self._announced:
            self._summarize(self._sweep_dir, announce=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.enabled or config.hydra.mode != RunMode.MULTIRUN:
            return
        self._summarize(str(config.hydra.sweep.dir), announce=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            self._summarize(str(config.hydra.sweep.dir), announce=True)
