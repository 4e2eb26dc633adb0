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
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only

from selfsup_vis.utils.io import write_json, write_text

log = logging.getLogger(__name__)

# Loggers made during the current task; ``run_task`` closes them whatever happens.
_open_loggers: list[Logger] = []


def run_dir() -> Path:
    """The Hydra run (or sweep job) directory; the current directory outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """Build every entry of ``cfg.logger``; they are closed by ``run_task`` even on failure."""
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
    _open_loggers.extend(loggers)
    return loggers


def close_loggers(loggers: list[Logger], status: str) -> None:
    """Finalise loggers; W&B runs are finished with a failing exit code on error."""
    for lg in loggers:
        try:
            lg.finalize(status)
            if type(lg).__name__ == "WandbLogger":
                import wandb

                if wandb.run is not None:
                    wandb.finish(exit_code=0 if status == "success" else 1)
        except Exception as err:  # closing must never hide the task's own error
            log.warning("could not close logger %s: %s", type(lg).__name__, err)


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


def write_summary(summary: dict[str, Any], name: str = "summary.json") -> Path | None:
    """Write the task's JSON summary into the run directory (rank zero only)."""
    if not is_global_zero():
        return None
    path = write_json(run_dir() / name, summary)
    log.info("summary: %s", path)
    return path


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
    out = run_dir()
    if is_global_zero():
        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        write_text(out / "config_resolved.yaml", OmegaConf.to_yaml(job_cfg, resolve=True))
    task_fn = hydra.utils.get_method(cfg.task._target_)
    status = "failed"
    try:
        result = task_fn(cfg)
        status = "success"
        return result
    finally:
        close_loggers(_open_loggers, status)
        _open_loggers.clear()
        log.info("outputs of task=%s: %s", cfg.task.name, out)
