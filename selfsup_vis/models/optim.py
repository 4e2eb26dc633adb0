"""Optimizer and learning-rate schedule of ``task=pretrain``, built from the model's config.

``model.optimizer`` is a ``_partial_`` torch optimizer (lightning-hydra-template style) whose
``lr`` is the recipe's base lr at ``model.lr_base_batch`` images; it is scaled linearly by the
effective batch (:func:`effective_batch_size`, the one place it is computed).
``model.scheduler`` is a ``_partial_`` :func:`warmup_cosine`. Parameter groups come from timm's
``param_groups_weight_decay``. The schedule always fits the run: ``trainer.max_epochs`` /
``max_steps`` through ``trainer.estimated_stepping_batches``, ``trainer.max_time`` through the
elapsed fraction of Lightning's ``Timer``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.callbacks import Timer
from timm.optim import param_groups_weight_decay
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class RunLength:
    """How long the run is: optimizer steps (may be inf with ``max_time`` only), steps per
    epoch, and the time budget with a clock of the elapsed training time (``None``: no limit)."""

    total_steps: float
    steps_per_epoch: float
    max_seconds: float | None = None
    elapsed: Callable[[], float] | None = None

    def progress(self, step: int) -> float:
        """Fraction of the run done after ``step`` optimizer steps (by steps or by time)."""
        p = step / self.total_steps if math.isfinite(self.total_steps) and self.total_steps > 0 else 0.0
        if self.max_seconds and self.elapsed is not None:
            p = max(p, self.elapsed() / self.max_seconds)
        return min(1.0, p)


def effective_batch_size(trainer: Any) -> int | None:
    """Images per optimizer step: loader batch x devices x nodes x gradient accumulation
    (None when the loader does not say, e.g. a pre-batched ``DataLoader(batch_size=None)``)."""
    loader = getattr(trainer, "train_dataloader", None)
    batch = getattr(loader, "batch_size", None)
    if batch is None:
        batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch is None:
        return None
    return int(batch) * int(trainer.world_size) * int(trainer.accumulate_grad_batches)


def run_length(trainer: Any) -> RunLength:
    """The run's length from the Trainer (call inside ``configure_optimizers``)."""
    total = float(trainer.estimated_stepping_batches)
    per_epoch = float(trainer.num_training_batches) / max(1, int(trainer.accumulate_grad_batches))
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    remaining = timers[0].time_remaining("train") if timers else None  # Timer: trainer.max_time
    if remaining is not None:
        timer = timers[0]
        budget = float(timer.time_elapsed("train")) + float(remaining)
        return RunLength(total, per_epoch, budget, lambda: float(timer.time_elapsed("train")))
    return RunLength(total, per_epoch)


def scaled_lr(base_lr: float, base_batch: int | None, batch: int | None) -> float:
    """Linear scaling rule; ``base_batch=None`` means the lr is absolute. An unknown batch
    keeps the base lr, with a warning."""
    if not base_batch:
        return float(base_lr)
    if batch is None:
        log.warning("the training batch size is unknown (loader without batch_size): lr NOT scaled, "
                    "using the base lr %g of batch %d", base_lr, base_batch)
        return float(base_lr)
    return float(base_lr) * batch / float(base_batch)


def param_groups(model: nn.Module, weight_decay: float, no_weight_decay: Collection[str] = (),
                 exclude_1d: bool = True) -> list[dict[str, Any]]:
    """timm's ``param_groups_weight_decay``: no decay for 1-D tensors (norms, biases) when
    ``exclude_1d`` and for the named tensors (pos_embed, tokens, ...); frozen ones left out."""
    if not exclude_1d and not no_weight_decay:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    return param_groups_weight_decay(model, weight_decay, weight_decay_exclude_1d=exclude_1d,
                                     no_weight_decay_list=set(no_weight_decay))


def warmup_cosine(optimizer: torch.optim.Optimizer, run: RunLength, warmup_epochs: float = 0.0,
                  recipe_epochs: float | None = None, warmup_start_factor: float = 1e-4,
                  eta_min: float = 0.0, eta_min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ``warmup_start_factor`` x lr over ``warmup_epochs``, then cosine to
    ``eta_min + eta_min_ratio * lr``, stepped every optimizer step.

    When the run is shorter than the recipe's warmup, or only ``trainer.max_time`` bounds it,
    the warmup becomes the recipe's fraction ``warmup_epochs / recipe_epochs`` of the run
    (logged), so that every run warms up and then decays to the floor exactly at its end."""
    base = max(g["lr"] for g in optimizer.param_groups)
    floor = (float(eta_min) + float(eta_min_ratio) * base) / base if base > 0 else 0.0
    warm_frac = 0.0
    if warmup_epochs > 0:
        warm_steps = warmup_epochs * run.steps_per_epoch
        if math.isfinite(run.total_steps) and warm_steps < run.total_steps and not run.max_seconds:
            warm_frac = warm_steps / run.total_steps
        else:
            if not recipe_epochs:
                raise ValueError(f"scheduler: warmup_epochs={warmup_epochs} does not fit this run "
                                 f"and recipe_epochs is not set to scale it")
            warm_frac = float(warmup_epochs) / float(recipe_epochs)
            log.info("warmup: the run (%s) is shorter than the recipe's %g warmup epochs or bounded "
                     "by time; warming up over the recipe's fraction %.3g of the run instead",
                     f"{run.total_steps:g} steps" if math.isfinite(run.total_steps) else
                     f"max_time {run.max_seconds:g} s", warmup_epochs, warm_frac)
    start = float(warmup_start_factor)

    def factor(step: int) -> float:
        p = run.progress(step)
        if p < warm_frac:
            return start + (1.0 - start) * p / warm_frac
        t = (p - warm_frac) / max(1e-12, 1.0 - warm_frac)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    log.info("lr schedule: %s, warmup %.3g of the run, cosine to %.3g x lr", "by time" if run.max_seconds
             else f"{run.total_steps:g} steps", warm_frac, floor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
