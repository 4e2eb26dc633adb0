"""task=pretrain: train (or continue training) MAE, SimMIM, MaskFeat or MoCo v2 on any dataset.

config -> model (``build_model``: its ``model.checkpoint`` initialises the weights) -> data (the
model's training pipeline for train, the eval pipeline for val) -> callbacks (``conf/callbacks``:
checkpoints, lr monitor, training stats, reconstruction / embedding / feature-health dumps) ->
``Trainer.fit`` (resuming ``task.ckpt_path``: optimizer, scheduler, step and epoch) -> summary.
The optimizer, schedule and gradient clipping are the model's recipe (``model.optimizer``,
``model.scheduler``, ``model.gradient_clip_val``; see ``selfsup_vis.models.optim``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from selfsup_vis.checkpoints.provenance import model_provenance, model_random_parts
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.launch.requeue import RequeueOnSignal, find_resume_checkpoint
from selfsup_vis.models import build_model, model_pipeline
from selfsup_vis.report.curves import curves_figure, read_training_curves, write_curves_csv
from selfsup_vis.report.summaries import PretrainSummary, SummaryContributor
from selfsup_vis.tasks.common import TaskRun, build_trainer, instantiate_callbacks, phase

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """A resume checkpoint that does not belong to the configured model."""


def check_resume_checkpoint(path: str | Path, model: pl.LightningModule) -> dict[str, Any]:
    """Open a Lightning checkpoint without executing pickled code and make sure it was saved
    from the same model (class, name, every tensor's shape) before Lightning restores it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"task.ckpt_path: checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ResumeError(f"task.ckpt_path: cannot read {p} as a Lightning checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise ResumeError(f"task.ckpt_path: {p} is not a Lightning training checkpoint (no state_dict / "
                          "loops); to start from its weights use model.checkpoint= instead")
    ours = f"{type(model).__name__} '{getattr(model, 'model_name', '?')}'"
    hp = ckpt.get("hyper_parameters") or {}
    theirs_name = hp.get("name")
    sd, own = ckpt["state_dict"], model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(k for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or mismatched:
        theirs = f"'{theirs_name}'" if theirs_name else "another model"
        detail = "; ".join(
            f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
            if keys
        )
        raise ResumeError(
            f"task.ckpt_path={p} was saved from {theirs}, but the configured model is {ours}: "
            f"{detail}. Resume with the model it was trained with (model=...), or start a new run "
            f"from its weights with model.checkpoint=")
    if theirs_name and theirs_name != getattr(model, "model_name", theirs_name):
        log.warning("resuming %s from a checkpoint of '%s' (same tensors)", ours, theirs_name)
    return {"path": str(p), "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}


def _default_callbacks(callbacks: list[pl.Callback], ckpt_dir: Path) -> list[pl.Callback]:
    """Lightning's checkpointing and lr monitoring unless the config already has them (e.g.
    ``callbacks=none``); our own callbacks come only from the ``callbacks`` config."""
    added: list[pl.Callback] = []
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        # save_top_k=1: Lightning 2.6 writes last.ckpt only next to a checkpoint it saved
        added.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="latest-epoch", save_top_k=1, save_last=True,
                                     every_n_epochs=1, enable_version_counter=False))
        added.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:03d}-step{step:06d}",
                                     auto_insert_metric_name=False, save_top_k=-1, every_n_epochs=10))
    if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
        added.append(LearningRateMonitor(logging_interval="step"))
    if added:
        log.info("added default callbacks: %s", ", ".join(type(c).__name__ for c in added))
    return callbacks + added


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    with phase("model"):
        model = build_model(cfg.model)
    resume = check_resume_checkpoint(t.ckpt_path, model) if t.ckpt_path else None
    dm = hydra.utils.instantiate(cfg.dataset)
    train_pipe = model_pipeline(cfg.model)
    eval_pipe = pipeline_for_model(cfg.model, "eval", crop_pct=dm.eval_crop_pct)
    dm.configure(train=train_pipe, eval=eval_pipe)
    log.info("training on %s/%s with\n%s", dm.name, dm.train_split, train_pipe.describe())
    init = model_provenance("pretrain", cfg.model, model, init_seed=int(cfg.seed),
                            random_parts=model_random_parts(model), dataset=dm.name, split=dm.train_split)
    run.set_provenance(init.replace(random=False, random_parts=[], weights="trained by this run from "
                                    + ("random init" if init.random else init.weights)
                                    + (f" (random: {', '.join(init.random_parts)})" if init.random_parts else "")))

    loggers = run.loggers
    callbacks = instantiate_callbacks(cfg)
    if t.default_callbacks:
        callbacks = _default_callbacks(callbacks, Path(t.checkpoint_dir))
    if not any(isinstance(c, RequeueOnSignal) for c in callbacks):
        callbacks.append(RequeueOnSignal(dirpath=t.checkpoint_dir))  # does nothing outside a Slurm job
    if resume is None:  # a requeued / restarted job continues from its own checkpoint
        found = find_resume_checkpoint(t.checkpoint_dir, *(c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint)))
        if found is not None:
            resume = check_resume_checkpoint(found, model)
            log.warning("resuming from %s (step %s): found in the run directory", found, resume["global_step"])
    overrides: dict[str, Any] = {}
    if cfg.trainer.get("max_epochs") is None and cfg.trainer.get("max_steps", -1) in (-1, None):
        overrides["max_epochs"] = t.default_max_epochs
        log.info("trainer.max_epochs / max_steps unset: training %d epochs (task.default_max_epochs)",
                 t.default_max_epochs)
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        overrides["enable_checkpointing"] = False
    trainer = build_trainer(cfg, loggers, callbacks, **overrides)
    start = time.perf_counter()
    with phase("fit"):
        trainer.fit(model, datamodule=dm, ckpt_path=resume["path"] if resume else None)
    seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        training_curves(run, loggers, trainer.global_step)

    summary = _summary(cfg, model, dm, train_pipe, resume, trainer, callbacks, seconds)
    return run.write_summary(summary)


def training_curves(run: TaskRun, loggers: list[Any], step: int) -> list[Path]:
    """Loss and learning rate against the step, from the CSV logger's metrics.csv, as
    ``training_curves.png`` (report.html embeds it) and ``training_curves.csv``. Without a CSV
    logger (``logger=tensorboard|wandb|none``) there is nothing to read back: said in the log.
    Logged at the final ``step`` (W&B's step never goes back)."""
    csv_files = [Path(lg.experiment.metrics_file_path) for lg in loggers if isinstance(lg, CSVLogger)]
    metrics = next((p for p in csv_files if p.is_file()), None)
    if metrics is None:
        log.info("no CSV metrics (logger=csv or many): no loss / learning-rate curves in the report")
        return []
    loss, lr = read_training_curves(metrics)
    if not loss and not lr:
        log.warning("%s has no loss or learning-rate column: no training curves", metrics)
        return []
    write_curves_csv(run.dir / "training_curves.csv", loss, lr)
    return run.figure(curves_figure(loss, lr, title=str(run.cfg.model.get("name", "training"))),
                      "training_curves", "pretrain/training_curves", formats=["png"], step=step)


def _summary(cfg: DictConfig, model: pl.LightningModule, dm: Any, train_pipe: Any, resume: dict[str, Any] | None,
             trainer: pl.Trainer, callbacks: list[pl.Callback], seconds: float) -> PretrainSummary:
    """Where training ended, what it saved and the reconstruction error along the way."""
    ckpt_cbs = trainer.checkpoint_callbacks
    last = [Path(c.dirpath) / "last.ckpt" for c in ckpt_cbs if c.save_last and c.dirpath]
    contributed = {k: v for c in callbacks if isinstance(c, SummaryContributor) for k, v in c.summary_fields().items()}
    return PretrainSummary(
        model=cfg.model.name, algorithm=type(model).__name__, dataset=dm.name, train_split=dm.train_split,
        pipeline=train_pipe.describe(), resumed_from=resume, epochs=trainer.current_epoch,
        global_step=trainer.global_step, fit_seconds=round(seconds, 3),
        final_metrics={k: float(v) for k, v in trainer.callback_metrics.items()
                       if isinstance(v, torch.Tensor) and v.numel() == 1},
        checkpoints={
            "dirs": sorted({str(c.dirpath) for c in ckpt_cbs if c.dirpath}),
            "last": str(last[0]) if last and last[0].is_file() else None,
            "saved": sorted({str(p) for c in ckpt_cbs if c.dirpath for p in Path(c.dirpath).glob("*.ckpt")}),
        },
        callbacks=[type(c).__name__ for c in callbacks],
        callback_failures=[f for c in callbacks for f in getattr(c, "failures", [])],
        optim=dict(getattr(model, "optim_summary", {}) or {}),
        **contributed)
