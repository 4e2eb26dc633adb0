"""``hydra/launcher=local``: submitit's local launcher, but one job's death never takes its
siblings with it, and the job is marked with the cause.

hydra-submitit-launcher collects results in order (``[j.results()[0] for j in jobs]``): the
first job that died (killed from outside, e.g. by the out-of-memory killer) raises at once,
Hydra ends the command, and submitit kills the jobs still running when their handles are
garbage-collected; both jobs' ``status.json`` stay ``running``. Here every job is waited for
first; then a job that ended without a result is marked in its ``status.json``: ``killed``
when its process vanished without a word (SIGKILL: out of memory, ``kill -9``), ``failed``
with submitit's error otherwise. Hydra still gets the first error (the command exits
non-zero) and the sweep's status table lists each job with its cause.

Hydra instantiates launchers only from the ``hydra_plugins`` package, so this is not a launcher
of its own: :func:`install` (called by the sweep's ``StatusTable`` callback when a sweep starts,
before any job is launched) gives the plugin's ``LocalLauncher`` the ``launch`` below.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin
from omegaconf import OmegaConf

from selfsup_vis.launch.records import STATUS_FILE, SWEEP_ID_ENV, read_statuses, slurm_state
from selfsup_vis.utils.io import write_json

log = logging.getLogger(__name__)


def mark_dead_job(sweep_dir: Path, job_num: int, error: BaseException) -> dict[str, Any]:
    """Record in the job's ``status.json`` how a job that produced no result ended."""
    records = [r for r in read_statuses(sweep_dir, os.environ.get(SWEEP_ID_ENV)) if r.get("job_num") == job_num]
    record = dict(records[0]) if records else {"job_num": job_num, "overrides": [], "status": "running",
                                               "dir": str(sweep_dir / str(job_num))}
    job_dir = Path(record.pop("dir"))
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if record.get("status") == "running":  # the job itself never got to say anything
        vanished = "has not produced any output" in str(error) or "UncompletedJobError" in type(error).__name__
        record["status"] = "killed (signal 9)" if vanished else "failed"
        record["error"] = ("the job process ended without a result or a status: killed from outside "
                           "(SIGKILL: the out-of-memory killer, kill -9) or a hard crash; see its "
                           f".submitit log ({text})" if vanished else f"{type(error).__name__}: {text}")
        if vanished:
            record["signal"] = 9
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json(job_dir / STATUS_FILE, record)
        log.error("sweep job #%s %s: %s", job_num, record["status"], record["error"])
    return record


def launch_waiting_for_all(self: _plugin.LocalLauncher, job_overrides: Sequence[Sequence[str]],
                           initial_job_idx: int) -> Sequence[JobReturn]:
    """hydra-submitit-launcher's ``launch``, but every job is waited for before any failure
    is reported, and a job that died is marked (:func:`mark_dead_job`)."""
    import submitit

    assert self.config is not None and len(job_overrides) > 0
    params = dict(self.params)
    init_params = {"folder": params["submitit_folder"]}
    if "max_num_timeout" in params:
        init_params[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
    executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
    baseparams = set(OmegaConf.structured(_plugin.BaseQueueConf).keys())
    executor.update_parameters(**{
        k if k in baseparams else f"{self._EXECUTOR}_{k}": v
        for k, v in params.items() if k not in ("max_num_timeout", "submitit_folder")})
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in self.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
    log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
    jobs = executor.map_array(self, *zip(*job_params))
    wait_for_all(jobs, sweep_dir, initial_job_idx)  # all of them, before any error is raised
    results, first_error = [], None
    for idx, job in enumerate(jobs, start=initial_job_idx):
        try:
            if not job.done() and not job.paths.result_pickle.exists():
                raise RuntimeError(f"job {job.job_id} ended without a result (see its status.json and "
                                   f"{job.paths.stderr})")
            results.append(job.results()[0])
        except Exception as err:  # noqa: BLE001 - recorded, then the first one is raised
            mark_dead_job(sweep_dir, idx, err)
            first_error = first_error or err
    if first_error is not None:
        raise first_error
    return results


#: Slurm states of a job that will not run again
_ACTIVE = ("RUNNING", "PENDING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING",
           "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING")
#: seconds a job's own final status.json is trusted before its result must have appeared
GRACE_S = 60.0


def _job_ended(job: Any, record: dict[str, Any] | None) -> bool:
    """Whether a job is over: submitit knows (its result, or sacct), else Slurm's
    ``scontrol`` says it is no longer active, else the job's own final ``status.json`` is
    older than :data:`GRACE_S` (a cluster without ``sacct``: submitit alone would wait for ever)."""
    if job.done():
        return True
    if type(job).__name__ == "SlurmJob" and shutil.which("scontrol"):
        state = slurm_state(str(job.job_id))
        if state and state.split()[0] not in _ACTIVE:
            return True
    if record and record.get("status") not in (None, "running") and record.get("ended"):
        try:
            ended = time.mktime(time.strptime(record["ended"], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return False
        return time.time() - ended > GRACE_S
    return False


def wait_for_all(jobs: Sequence[Any], sweep_dir: Path, first_idx: int, poll_s: float = 2.0,
                 timeout_s: float | None = None) -> None:
    """Wait until every job has ended (:func:`_job_ended`), or ``timeout_s`` (default
    ``$SELFSUP_VIS_SWEEP_WAIT_S``, else no limit while Slurm says a job is active)."""
    if timeout_s is None and os.environ.get("SELFSUP_VIS_SWEEP_WAIT_S"):
        timeout_s = float(os.environ["SELFSUP_VIS_SWEEP_WAIT_S"])
    deadline = None if timeout_s is None else time.time() + timeout_s
    pending = dict(enumerate(jobs, start=first_idx))
    while pending:
        records = {r.get("job_num"): r for r in read_statuses(sweep_dir, os.environ.get(SWEEP_ID_ENV))}
        for idx in [i for i, job in pending.items() if _job_ended(job, records.get(i))]:
            del pending[idx]
        if not pending:
            return
        if deadline is not None and time.time() > deadline:
            log.error("stopped waiting for sweep jobs %s after %.0f s (SELFSUP_VIS_SWEEP_WAIT_S)",
                      sorted(pending), timeout_s)
            return
        time.sleep(poll_s)


def install() -> None:
    """Make ``hydra/launcher=local`` and ``=slurm`` wait for every job (idempotent)."""
    _plugin.LocalLauncher.launch = launch_waiting_for_all  # type: ignore[method-assign]
    _plugin.SlurmLauncher.launch = launch_waiting_for_all  # type: ignore[method-assign]


__all__ = ["install", "launch_waiting_for_all", "mark_dead_job"]
