"""Per-job ``status.json`` and the status table printed when a sweep ends.

Every run (a single run, or each job of a sweep, local or on Slurm) writes
``<job dir>/status.json`` from global rank 0; ``run_task`` writes it when the task starts and
again when it ends. Format (one flat JSON object, also read by sweep summaries)::

    {"status": "running" | "done" | "failed" | "interrupted" | "cancelled" | "preempted"
               | "killed (signal N)",                  # (the last written by the sweep launcher)
     "signal": 15,                                     # only when a signal stopped it
     "error": null | "<first line of the error>",     # "ValueError: synthetic split 'x' unknown"
     "overrides": ["task=browse", "model=mae_tiny"],   # the job's own overrides (.hydra/overrides.yaml)
     "task": "browse",
     "job_num": 0,                                     # Hydra's job number in the sweep (null: single run)
     "slurm_job_id": "123_0" | null,                   # "<array id>_<task>" or SLURM_JOB_ID
     "sweep_id": "<hex>" | null,                       # the sweep that launched it (see StatusTable)
     "started": "2025-01-01T12:00:00", "ended": null | "2025-01-01T12:03:00"}

A job that is stopped from outside (time limit, ``scancel``, out of memory, node failure) stays
``"running"``; the table then asks Slurm for its state (``timed out`` / ``cancelled`` ...).
A requeued job (see ``launch.requeue``) writes ``"running"`` again when it restarts.

Inside a submitit job (local or Slurm) a failed task also makes the job process exit with
code 1 once submitit has stored its result, so Slurm records the job as FAILED while the
submitting command still receives Hydra's result (and the sweep goes on).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from selfsup_vis.launch.local_launcher import install as install_local_launcher
from selfsup_vis.launch.records import STATUS_FILE, SWEEP_ID_ENV, read_statuses, slurm_state
from selfsup_vis.utils.exit_hooks import at_exit
from selfsup_vis.utils.io import write_json

log = logging.getLogger(__name__)



def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def slurm_job_id() -> str | None:
    array_id, task_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    return os.environ.get("SLURM_JOB_ID")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def write_job_started(job_dir: Path, task: str) -> dict[str, Any]:
    """The ``running`` record at the start of a job (call on global rank 0 only)."""
    overrides: list[str] = []
    job_num = None
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        job_num = hc.job.get("num") if hc.mode == RunMode.MULTIRUN else None
    record = {"status": "running", "error": None, "overrides": overrides, "task": task,
              "job_num": job_num, "slurm_job_id": slurm_job_id(),
              "sweep_id": os.environ.get(SWEEP_ID_ENV), "pid": os.getpid(), "started": _now(), "ended": None}
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / STATUS_FILE, record)
    return record


def write_job_ended(job_dir: Path, record: dict[str, Any], error: BaseException | None) -> None:
    """``done``, ``failed`` (with the error's first line) or, for a run stopped by a signal
    (:class:`~selfsup_vis.launch.signals.Interrupted`), its ``status`` (interrupted /
    cancelled / preempted) with ``signal``; rank 0 only."""
    status = "done" if error is None else getattr(error, "status", "failed")
    record = {**record, "status": status, "error": first_line(error) if error else None, "ended": _now()}
    if getattr(error, "signum", None) is not None:
        record["signal"] = int(error.signum)
    try:
        write_json(job_dir / STATUS_FILE, record)
    except OSError as err:  # never hide the task's own outcome
        log.warning("could not write %s: %s", job_dir / STATUS_FILE, err)


def in_submitit_job() -> bool:
    return "SUBMITIT_FOLDER" in os.environ  # set by submitit's job runner (local and Slurm)


def exit_nonzero_at_exit(code: int = 1) -> None:
    """Make this submitit job process end with ``code`` after submitit has stored the job's
    result: Hydra catches a task's exception, so the process would otherwise exit 0 and Slurm
    would record COMPLETED."""

    def _exit() -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(_exit)


# ---------------------------------------------------------------- the table at the end of a sweep

def outcome(record: dict[str, Any]) -> str:
    """done / failed / timed out / cancelled / running ... (Slurm asked for a job still 'running')."""
    status = record.get("status", "?")
    if status != "running":
        return status
    state = slurm_state(record["slurm_job_id"]) if record.get("slurm_job_id") else None
    if state is None or state in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING"):
        return "running" if state else "not finished"
    return {"TIMEOUT": "timed out", "CANCELLED": "cancelled", "OUT_OF_MEMORY": "out of memory",
            "NODE_FAIL": "node failure", "PREEMPTED": "preempted"}.get(state.split()[0], state.lower())


def format_table(records: list[dict[str, Any]], sweep_dir: Path) -> tuple[str, int]:
    """The table text and the number of jobs that did not end ``done``."""
    rows = [(str(r.get("job_num", "")), outcome(r), r.get("slurm_job_id") or "-",
             " ".join(r.get("overrides") or []) or "-", r.get("error") or "") for r in records]
    bad = sum(row[1] != "done" for row in rows)
    head = ("#", "status", "slurm id", "overrides", "error")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(4)]
    lines = [f"sweep {sweep_dir}: {len(rows)} jobs, {len(rows) - bad} done, {bad} not done"]
    for row in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4][:200])
    return "\n".join(lines), bad


class StatusTable(Callback):
    """Hydra callback (``hydra.callbacks.status_table`` in conf/config.yaml): at the end of a
    sweep, print one line per job (done / failed with its first error line / timed out ...)
    and exit non-zero if any job did not end ``done``.

    Hydra's sweeper raises as soon as it sees a failed job's result, before
    ``on_multirun_end``; the table is then printed when the process exits (after Hydra's own
    error message, whose exit code is already 1) by ``utils.exit_hooks``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._sweep_dir: Path | None = None
        self._sweep_id: str | None = None
        self._printed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        install_local_launcher()  # hydra/launcher=local: one job's death does not kill its siblings
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._sweep_id = uuid.uuid4().hex[:12]
        os.environ[SWEEP_ID_ENV] = self._sweep_id  # inherited by local and Slurm jobs
        at_exit(self._print)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        bad = self._print()
        if bad:
            sys.exit(1)

    def _print(self) -> int:
        if self._printed or self._sweep_dir is None:
            return 0
        self._printed = True
        records = read_statuses(self._sweep_dir, self._sweep_id)
        if not records:
            return 0
        text, bad = format_table(records, self._sweep_dir)
        print(text, file=sys.stderr if bad else sys.stdout, flush=True)
        return bad
