"""One run directory, one run: a rerun into the directory of a finished run is refused (or, with
``task.overwrite=true``, replaces it), while an unfinished run there is resumed.

What is in the directory decides (``status.json``, see :mod:`selfsup_vis.launch.status`):

* nothing of a run: a fresh run;
* a run that did not finish (``running``: a requeued or killed job; ``interrupted``,
  ``cancelled``, ``preempted``, ``failed``, ``killed (signal N)``): this run resumes it; its
  outputs, checkpoints and extraction chunks stay (each is reused only when its content key
  matches) and its manifest goes on (:mod:`selfsup_vis.report.manifest`);
* a finished run (``done``; or, written before status.json existed, a successful summary.json):
  refused before anything is written, naming the directory and both ways out; with
  ``task.overwrite=true`` every file its manifest lists (outputs, logger folders, checkpoints) is
  removed first, so neither the report nor the loggers mix the two runs.

A single run is checked by the Hydra callback :class:`RerunGuard` before Hydra writes its
``.hydra/`` files into the directory; every run (sweep jobs, in-process ``run_task``) again by
``run_task`` before it writes anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from selfsup_vis.config.validate import ConfigError, ConfigRefused
from selfsup_vis.launch.records import STATUS_FILE
from selfsup_vis.report.manifest import (
    CHECKPOINT_DIRS,
    LOG_DIRS,
    MANIFEST,
    RunManifest,
    read_manifest,
    remove_listed,
)
from selfsup_vis.report.rundir import read_json

log = logging.getLogger(__name__)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def kept_paths(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """What is never a run's file although it may lie in its directory: the caches
    (``task.cache_dir``, ``$SELFSUP_VIS_CACHE``) and every existing file or folder the config
    names there (a dataset root, ``task.features``, images ...: the run's inputs). The
    directory itself and its logger and checkpoint folders are the run's."""
    task = cfg.get("task") or {}
    found = [str(p) for p in (task.get("cache_dir"), os.environ.get("SELFSUP_VIS_CACHE")) if p]
    try:
        job = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                     resolve=True)
    except Exception:  # an interpolation that needs Hydra's runtime: the caches alone
        job = {}
    root = Path(run_dir).resolve()
    for text in _strings(job):
        if "/" in text and len(text) < 4096:
            p = Path(text).expanduser()
            try:
                inside = p.exists() and root in p.resolve().parents
            except OSError:
                continue
            if inside and p.resolve().relative_to(root).parts[0] not in (*LOG_DIRS, *CHECKPOINT_DIRS):
                found.append(text)
    return [Path(p).expanduser() for p in dict.fromkeys(found)]


#: where launchers put a process's global rank (Lightning's ``rank_zero_only`` reads the same)
RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


class RunDirTaken(ConfigError):
    """The run directory holds a finished run (exit code 2, like any value refused at start)."""


def finished_run(run_dir: Path) -> dict[str, Any] | None:
    """The record of the finished run in ``run_dir`` (status.json, else a successful legacy
    summary.json); None when there is none or it did not finish."""
    status = read_json(Path(run_dir) / STATUS_FILE)
    if status is not None:
        return status if status.get("status") == "done" else None
    summary = read_json(Path(run_dir) / "summary.json")
    if summary is not None and summary.get("status", "success") == "success":
        return {"status": "done", "task": summary.get("task"), "ended": summary.get("created")}
    return None


def _refusal(run_dir: Path, done: dict[str, Any], why: str = "") -> str:
    what = f"task={done.get('task') or '?'}" + (f", finished {done['ended']}" if done.get("ended") else "")
    return (f"{run_dir} already holds a finished run ({what}){why}: a second run there would mix "
            "its outputs with that run's. Choose another directory with hydra.run.dir=<new dir> "
            "(hydra.sweep.dir=<new dir> for a sweep), or replace that run with task.overwrite=true.")


def claim_run_dir(run_dir: str | Path, overwrite: bool, keep: Sequence[Path] = ()) -> RunManifest:
    """Make ``run_dir`` this run's (module doc) and return its manifest, started; raises
    :class:`RunDirTaken` before anything is written when a finished run is there and
    ``overwrite`` is off. ``keep``: cache folders that are never the run's files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return RunManifest(run_dir, keep=keep)
    done = finished_run(run_dir)
    if done is None:
        status = read_json(run_dir / STATUS_FILE)
        if status is None:  # fresh; a manifest here was started by RerunGuard's overwrite
            return RunManifest.resume(run_dir, keep, next_attempt=False)
        manifest = RunManifest.resume(run_dir, keep)
        log.warning("resuming the unfinished run in %s (status %s%s): attempt %d; its outputs, checkpoints "
                    "and extracted chunks are kept and reused only where their key matches", run_dir,
                    status.get("status"), f", started {status['started']}" if status.get("started") else "",
                    manifest.attempt)
        return manifest
    if not overwrite:
        raise RunDirTaken(_refusal(run_dir, done))
    previous = read_manifest(run_dir)
    if previous is None:
        raise RunDirTaken(_refusal(run_dir, done, f", but it has no {MANIFEST} listing its files (written "
                                   "by an older version), so task.overwrite=true cannot tell them from "
                                   "yours; remove the directory yourself or choose another"))
    replaced = int(previous.get("replaced", 0)) + 1
    removed = remove_listed(run_dir, previous)
    for name in (STATUS_FILE, MANIFEST):
        (run_dir / name).unlink(missing_ok=True)
    log.warning("task.overwrite=true: removed the %d files of the previous run in %s (outputs, logger "
                "folders, checkpoints; feature caches and extraction chunks are kept)", len(removed), run_dir)
    return RunManifest(run_dir, keep=keep, replaced=replaced)


class RerunGuard(Callback):
    """Hydra callback (``hydra.callbacks.rerun_guard``): a single run into the directory of a
    finished run is refused (or replaced, ``task.overwrite=true``) before Hydra writes its
    ``.hydra/`` files there, so the finished run's record stays intact."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if any(os.environ.get(k, "0") != "0" for k in RANK_VARS):
            return  # a DDP rank other than zero: rank zero owns the directory
        try:
            run_dir = Path(str(config.hydra.run.dir))
            overwrite = bool(config.task.get("overwrite", False))
        except Exception as err:  # an unresolvable run dir: run_task checks again
            log.debug("rerun guard skipped: %s", err)
            return
        if finished_run(run_dir) is None:
            return  # fresh or resumed: run_task says which, once Hydra's job log is set up
        try:
            manifest = claim_run_dir(run_dir, overwrite, kept_paths(config, run_dir))
        except RunDirTaken as err:
            raise ConfigRefused(err) from None
        manifest.update()  # its start and how many runs it replaced, for run_task
