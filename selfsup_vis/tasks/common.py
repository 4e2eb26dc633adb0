"""What every task needs: the run directory, loggers that always get closed, a Trainer, a summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from selfsup_vis.utils.io import write_json, write_text

log = logging.getLogger(__name__)

def run_dir() -> Path:
    """The Hydra run (or sweep job) directory; the current directory outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """Build every entry of ``cfg.logger`` (a dict of named ``_target_`` entries)."""
    loggers: list[Logger] = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None:
            continue
        if "_target_" not in conf:
            raise ValueError(f"logger.{name} has no _target_")
        lg = hydra.utils.instantiate(conf)
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

    @property
    def loggers(self) -> list[Logger]:
        if self._loggers is None:
            self._loggers = instantiate_loggers(self.cfg)
        return self._loggers

    def write_summary(self, summary: dict[str, Any], name: str = "summary.json") -> Path | None:
        """The task's JSON summary in the run directory (rank zero only)."""
        if not is_global_zero():
            return None
        path = write_json(self.dir / name, summary)
        log.info("summary: %s", path)
        return path

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


def run_task(cfg: DictConfig) -> Any:
    """Seed, record the resolved config, call the task function, always close the loggers."""
    logging.getLogger("selfsup_vis").setLevel(cfg.get("log_level", "INFO"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run = TaskRun(cfg)
    if is_global_zero():
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        write_text(run.dir / "config_resolved.yaml", OmegaConf.to_yaml(job_cfg, resolve=True))
    task_fn = hydra.utils.get_method(cfg.task._target_)
    status = "failed"
    try:
        result = task_fn(cfg, run)
        status = "success"
        return result
    finally:
        run.close(status)
        log.info("outputs of task=%s: %s", cfg.task.name, run.dir)
