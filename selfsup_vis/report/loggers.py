"""The run's config in every logger: the resolved job config (flattened, ``task.perplexity``)
as W&B config / CSV hparams.yaml when the loggers are built; at the end the same config with
the provenance (``provenance.weights`` ...: one flat copy, from summary.json's record, logged
once) and the headline numbers as TensorBoard hparams and metrics and W&B config and summary
values, so runs can be filtered and compared by layer, perplexity, dataset or seed.

A requeued or resumed run continues its loggers (same TensorBoard folder, same W&B run id,
CSV rows appended); only the attempt that finishes the run logs its hparams and results, so
``tensorboard/hparams.yaml`` and the HPARAMS tab hold the final ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from selfsup_vis.report.headline import finite
from selfsup_vis.report.provenance import run_provenance
from selfsup_vis.utils.io import write_with

log = logging.getLogger(__name__)


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config (everything but ``hydra``) as plain containers."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        return OmegaConf.to_container(job, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation that needs Hydra's runtime outside a Hydra run
        return OmegaConf.to_container(job, resolve=False)  # type: ignore[return-value]


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"task": {"perplexity": 30}}`` → ``{"task.perplexity": 30}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def run_params(cfg: DictConfig, summary: Mapping[str, Any] | None = None, *,
               provenance: bool = True) -> dict[str, Any]:
    """Flattened job config plus (with ``provenance``) the ``provenance.*`` keys."""
    config = job_config(cfg)
    params = flatten({k: v for k, v in config.items() if k != "logger"})
    if provenance:
        params.update({f"provenance.{k}": v for k, v in run_provenance(config, summary).items()})
    return params


def _each(loggers: list[Logger], what: str, fn: Any) -> None:
    for lg in loggers:
        try:
            fn(lg)
        except Exception as err:  # a logger that fails must never break (or hide) the run
            log.warning("could not log %s to %s: %s", what, type(lg).__name__, err)


def log_run_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """When the loggers are built: the config (the provenance is known at the end, from the
    summary; TensorBoard writes its hparams at the end, when the metrics are known)."""
    if not loggers:
        return
    params = run_params(cfg, provenance=False)
    _each([lg for lg in loggers if not isinstance(lg, TensorBoardLogger)], "the run config",
          lambda lg: lg.log_hyperparams(params))


def log_run_results(loggers: list[Logger], cfg: DictConfig, summary: Mapping[str, Any] | None,
                    metrics: Mapping[str, float], succeeded: bool) -> None:
    """At the end: config + provenance from the summary, and the headline numbers as
    hparam metrics (``run/succeeded`` is always one, so the HPARAMS tab lists every run)."""
    if not loggers:
        return
    params = run_params(cfg, summary)
    hp_metrics = {**finite(metrics), "run/succeeded": 1.0 if succeeded else 0.0}

    def tensorboard(lg: TensorBoardLogger) -> None:
        lg.log_hyperparams(params, metrics=hp_metrics)
        lg.experiment.flush()
        # Lightning writes hparams.yaml only when it does not exist yet (the model's hparams,
        # when fit starts, or an earlier attempt's): rewrite it with the final set
        write_with(Path(lg.log_dir) / TensorBoardLogger.NAME_HPARAMS_FILE,
                   lambda tmp: save_hparams_to_yaml(tmp, lg.hparams))

    def wandb(lg: WandbLogger) -> None:
        lg.experiment.config.update(params, allow_val_change=True)
        lg.experiment.summary.update(dict(hp_metrics))

    def other(lg: Logger) -> None:  # CSV: hparams.yaml (its metrics.csv keeps the task's rows only)
        lg.log_hyperparams(params)
        lg.save()

    for lg in loggers:
        fn = tensorboard if isinstance(lg, TensorBoardLogger) else wandb if isinstance(lg, WandbLogger) else other
        _each([lg], "the run results", fn)
