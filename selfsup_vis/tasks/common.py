"""What every task needs: the run directory, loggers that always get closed, a Trainer, a summary."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from selfsup_vis.checkpoints.provenance import (
    Provenance,
    check_random_parts,
    layer_parts,
    model_provenance,
    warn_if_random,
)
from selfsup_vis.config.validate import validate
from selfsup_vis.launch import status as job_status
from selfsup_vis.launch.requeue import Requeued
from selfsup_vis.launch.rerun import claim_run_dir, kept_paths
from selfsup_vis.launch.signals import Interrupted, catch_signals
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.report.harness import finish_run
from selfsup_vis.report.loggers import log_run_config
from selfsup_vis.report.manifest import RunManifest
from selfsup_vis.report.summaries import TaskSummary
from selfsup_vis.utils.io import write_json, write_text

log = logging.getLogger(__name__)

def run_dir() -> Path:
    """The Hydra run (or sweep job) directory; the current directory outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def instantiate_loggers(cfg: DictConfig, replaced: int = 0) -> list[Logger]:
    """Build every entry of ``cfg.logger`` (a dict of named ``_target_`` entries). In a run
    directory that held ``replaced`` finished runs before (``task.overwrite``), a W&B run id
    gets ``-r<replaced>`` so that this run never continues the replaced one's W&B run (a
    resumed run keeps its id)."""
    loggers: list[Logger] = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ValueError(f"logger.{name} has no _target_")
        extra = ({"id": f"{conf.id}-r{replaced}"} if replaced and conf.get("id")
                 and str(conf._target_).endswith("WandbLogger") else {})
        lg = hydra.utils.instantiate(conf, **extra)
        if isinstance(lg, CSVLogger) and is_global_zero():
            _ = lg.experiment  # create its directory before figures are written into it
        loggers.append(lg)
    return loggers


def close_loggers(loggers: list[Logger], status: str) -> None:
    """Finalise loggers; W&B runs are finished with a failing exit code on error."""
    for lg in loggers:
        try:
            lg.finalize(status)
            if isinstance(lg, WandbLogger):
                import wandb

                if wandb.run is not None:
                    wandb.finish(exit_code=0 if status == "success" else 1)
        except Exception as err:  # closing must never hide the task's own error
            log.warning("could not close logger %s: %s", type(lg).__name__, err)


class TaskRun:
    """One task run: its config, its directory, its loggers (built on first use, always closed
    by ``run_task``) and its summary. Every task function is ``run(cfg, run: TaskRun)``."""

    def __init__(self, cfg: DictConfig, out_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(out_dir) if out_dir is not None else run_dir()
        self._loggers: list[Logger] | None = None
        self.provenance: Provenance | None = None
        #: the files this run wrote (``run_task`` starts it when it claims the directory)
        self.manifest: RunManifest | None = None

    @property
    def loggers(self) -> list[Logger]:
        if self._loggers is None:
            self._loggers = instantiate_loggers(self.cfg, self.manifest.replaced if self.manifest else 0)
            log_run_config(self._loggers, self.cfg)  # the resolved config (provenance: at the end)
        return self._loggers

    # --- provenance: what every figure, summary and logger config says it came from
    def set_provenance(self, prov: Provenance) -> Provenance:
        """Record where this run's results come from: warns loudly about random weights, goes
        into summary.json (``weights``, ``provenance``) and from there, once and flat, into
        every logger's hyperparameters at the end (``report.loggers.log_run_results``).
        Figures draw it with ``plotting.provenance.add_provenance``."""
        self.provenance = prov
        warn_if_random(prov)
        return prov

    def model_provenance(self, model: Any, model_cfg: Any, *, layers: list[str] | None = None,
                         what: str | None = None, **fields: Any) -> Provenance:
        """Check and record where a built model's weights come from: the parts ``layers``
        need (everything when None) must not be random unless ``model.allow_random_parts``
        (refused before work, naming them), then :meth:`set_provenance`."""
        cfg = model_cfg if isinstance(model_cfg, dict) else OmegaConf.to_container(model_cfg, resolve=True)
        task = str(self.cfg.task.name)
        random_parts = check_random_parts(
            model, layer_parts(model, layers) if layers is not None else ("",),
            what or (f"task.layers={layers}" if layers is not None else f"task={task}"),
            allow=bool(cfg.get("allow_random_parts", False)))
        return self.set_provenance(model_provenance(task, cfg, model, init_seed=int(self.cfg.seed),
                                                    random_parts=random_parts, **fields))

    # --- outputs: figures, scalars and the summary go through the run object
    def figure(self, fig: Figure, name: str, key: str, *, provenance_layer: str | None = None,
               formats: Sequence[str] | None = None, step: int = 0) -> list[Path]:
        """Stamp the run's provenance on ``fig`` (its layer set to ``provenance_layer`` when
        given), save it as ``<run dir>/<name>.<fmt>`` for every requested format
        (``task.formats`` unless ``formats``), log it to every logger under ``key`` and close
        it. Returns the files written."""
        if self.provenance is None:
            raise RuntimeError("TaskRun.figure: call set_provenance (or model_provenance) first: "
                               "every figure says what it was computed from")
        prov = self.provenance if provenance_layer is None else self.provenance.replace(layer=provenance_layer)
        add_provenance(fig, prov)
        files = save_figure(fig, self.dir / name, list(formats if formats is not None else self.cfg.task.formats))
        log_figure(self.loggers, key, fig, step=step)
        fig.clf()
        return files

    def scalars(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """The numbers among ``metrics`` (others skipped) to every logger."""
        log_scalars(self.loggers, {k: v for k, v in metrics.items()
                                   if isinstance(v, int | float) and not isinstance(v, bool)}, step=step)

    def write_summary(self, summary: TaskSummary | dict[str, Any], name: str = "summary.json") -> dict[str, Any]:
        """The task's JSON summary in the run directory (rank zero writes it). A typed
        :class:`TaskSummary` is serialised with its ``headline``; ``task``, ``status``,
        ``created`` and the provenance (``weights``, ``provenance``) are filled in here (a plain
        dict in place). Returns the summary as written, which tasks return."""
        out = {"task": str(self.cfg.task.get("name", "?")), **summary.to_dict()} \
            if isinstance(summary, TaskSummary) else summary
        out.setdefault("task", str(self.cfg.task.get("name", "?")))
        if self.provenance is not None:
            out.setdefault("weights", self.provenance.weights)
            out.setdefault("provenance", self.provenance.to_dict())
        out.setdefault("status", "success")
        out.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        if is_global_zero():
            if self.manifest is not None:  # what report.html lists too (manifest.json)
                out["outputs"] = sorted({*self.manifest.update()["outputs"], name})
            log.info("summary: %s", write_json(self.dir / name, out))
        return out

    def close(self, status: str) -> None:
        if self._loggers:
            close_loggers(self._loggers, status)
        self._loggers = None


def build_trainer(
    cfg: DictConfig,
    loggers: list[Logger] | None = None,
    callbacks: list[pl.Callback] | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """The Trainer from ``cfg.trainer`` with our loggers and callbacks (and task overrides)."""
    return hydra.utils.instantiate(
        cfg.trainer, logger=loggers if loggers else False, callbacks=callbacks or [], **overrides
    )


def instantiate_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [
        hydra.utils.instantiate(c)
        for c in (cfg.get("callbacks") or {}).values()
        if c is not None and "_target_" in c
    ]


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Log how long a phase of a task took."""
    start = time.perf_counter()
    log.info("%s ...", name)
    yield
    log.info("%s done in %.2f s", name, time.perf_counter() - start)


def write_failed_summary(run: TaskRun, err: BaseException, started: float,
                         status: str = "failed") -> Path | None:
    """summary.json of a failed run: ``status: failed``, the error, its traceback and every
    file the run wrote before failing, so a partial figure set is never taken for a result."""
    if not is_global_zero():
        return None
    try:
        written = []
        if run.dir.is_dir():
            for p in sorted(run.dir.rglob("*")):
                if len(written) >= 500:
                    written.append("...")
                    break
                rel = p.relative_to(run.dir)
                if p.is_file() and rel.parts[0] != ".hydra" and rel.name != "summary.json" \
                        and p.stat().st_mtime >= started - 1:
                    written.append(str(rel))
        summary: dict[str, Any] = {
            "task": str(run.cfg.task.get("name", "?")),
            "status": status,
            "error": f"{type(err).__name__}: {err}",
            "error_type": type(err).__name__,
            "traceback": traceback.format_exception(type(err), err, err.__traceback__),
            "written": written,
            "note": f"the run {status if status != 'failed' else 'failed'}: files listed in "
                    "'written' are an incomplete set",
        }
        if isinstance(err, Interrupted):
            summary["signal"] = err.signum
        if run.provenance is not None:
            summary["weights"] = run.provenance.weights
            summary["provenance"] = run.provenance.to_dict()
        return write_json(run.dir / "summary.json", summary)
    except Exception as werr:  # never hide the task's own error
        log.warning("could not write the failed summary: %s", werr)
        return None


def run_task(cfg: DictConfig) -> Any:
    """Seed, record the resolved config, call the task function, always close the loggers."""
    logging.getLogger("selfsup_vis").setLevel(cfg.get("log_level", "INFO"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run = TaskRun(cfg)
    if is_global_zero():
        # a finished run's directory is refused (or cleared: task.overwrite), an unfinished one
        # resumed, before anything is written (selfsup_vis/launch/rerun.py)
        run.manifest = claim_run_dir(run.dir, bool(cfg.task.get("overwrite", False)), kept_paths(cfg, run.dir))
        run.manifest.update()  # its start time, kept by a resume
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        write_text(run.dir / "config_resolved.yaml", OmegaConf.to_yaml(job_cfg, resolve=True))
    task_fn = hydra.utils.get_method(cfg.task._target_)
    status = "failed"
    started = time.time()
    # <run dir>/status.json (selfsup_vis/launch/status.py): running -> done | failed
    job = job_status.write_job_started(run.dir, str(cfg.task.name)) if is_global_zero() else None
    try:
        with catch_signals():  # TERM/INT/USR1/USR2 -> Interrupted (selfsup_vis/launch/signals.py)
            validate(cfg)  # bad values are refused here, before any data or model is touched
            result = task_fn(cfg, run)
        status = "success"
        if job is not None:
            job_status.write_job_ended(run.dir, job, None)
        return result
    except Interrupted as err:  # stopped from outside: say so, then exit 128 + signal
        status = err.status
        write_failed_summary(run, err, started, status=err.status)
        log.error("task=%s %s (exit code %d)", cfg.task.name, err, err.exit_code)
        if job is not None:
            job_status.write_job_ended(run.dir, job, err)
        raise SystemExit(err.exit_code) from None
    except Requeued:  # checkpointed and requeued: the next attempt resumes (launch/requeue.py)
        status = "requeued"
        raise
    except Exception as err:
        write_failed_summary(run, err, started)
        log.exception("task=%s failed: %s", cfg.task.name, job_status.first_line(err))  # the job's own log
        if job is not None:
            job_status.write_job_ended(run.dir, job, err)
        if job_status.in_submitit_job():  # Slurm sees FAILED; the sweep still gets Hydra's result
            job_status.exit_nonzero_at_exit()
        raise
    finally:
        # headline numbers to the loggers and report.html (selfsup_vis/report); never raises
        if is_global_zero():
            if run.manifest is not None:
                run.manifest.update()  # the report lists what the manifest lists
            finish_run(run.dir, cfg, run._loggers or [], status == "success",
                       ended=status in ("success", "failed"))
        run.close(status if status in ("success", "failed") else "failed")
        if run.manifest is not None:
            run.manifest.update()  # report.html and the loggers' last files
        log.info("outputs of task=%s: %s", cfg.task.name, run.dir)
