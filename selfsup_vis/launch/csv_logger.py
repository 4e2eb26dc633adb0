"""A CSV logger whose ``metrics.csv`` survives a requeue or a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts ("Previous log
files in this directory will be deleted"): a requeued Slurm job (same run directory) kept only
its last attempt's rows. This one appends: the earlier rows stay, and every row carries
``attempt`` (1 for the first run in the directory, then one more per restart), so the curves of
all attempts can be told apart and joined.
"""

from __future__ import annotations

import csv
import logging
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` and tags rows with
    ``attempt``."""

    def _check_log_dir_exists(self) -> None:
        self.attempt = 1
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
            f.seek(0)
            header = next(csv.reader(f), [])
        self.metrics_keys = sorted(header)
        attempts = [int(float(r["attempt"])) for r in rows if r.get("attempt") not in (None, "")]
        self.attempt = (max(attempts) if attempts else 1) + 1
        log.info("%s holds %d rows of earlier attempts: appending attempt %d", self.metrics_file_path,
                 len(rows), self.attempt)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({**metrics_dict, "attempt": self.attempt}, step)


class CSVLogger(_CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends across restarts (module doc)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
