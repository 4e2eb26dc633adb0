"""TrainingStats: the per-step numbers MMSelfSup's logger hook printed (time, data_time,
memory, grad norm), as scalars on every logger: throughput (img/s over all ranks), data time,
step time, total gradient norm (after unscaling, before clipping) and peak GPU memory."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import grad_norm

from selfsup_vis.config.callbacks import TrainingStatsConfig
from selfsup_vis.config.defaults import takes_schema


def batch_size_of(batch: Any) -> int:
    """Images in a batch: our dict samples (``image`` / ``views``), tuples, or tensors."""
    if isinstance(batch, dict):
        x = batch.get("image", batch.get("views"))
        if isinstance(x, list | tuple):
            x = x[0]
        if isinstance(x, torch.Tensor):
            return int(x.shape[0])
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    if isinstance(batch, list | tuple) and batch:
        return batch_size_of(batch[0])
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return 0


def logging_step(trainer: pl.Trainer, stepped: bool) -> bool:
    """Whether Lightning writes this step's metrics (every ``trainer.log_every_n_steps``
    optimizer steps), from public Trainer state; ``stepped``: the optimizer already stepped."""
    n = int(trainer.log_every_n_steps)
    if n <= 0:
        return False
    step = trainer.global_step if stepped else trainer.global_step + 1
    return step % n == 0


def total_grad_norm(module: torch.nn.Module) -> torch.Tensor | None:
    """L2 norm of all gradients, from Lightning's ``grad_norm`` utility."""
    norms = grad_norm(module, norm_type=2)
    return norms.get("grad_2.0_norm_total")


@takes_schema(TrainingStatsConfig)
class TrainingStats(pl.Callback):
    """Logs ``train/throughput`` (img/s), ``train/data_time`` and ``train/step_time`` (s),
    ``train/grad_norm`` and, on CUDA, ``train/gpu_mem_mb`` (peak allocated) through
    ``LightningModule.log``, computed only on the steps Lightning writes
    (``trainer.log_every_n_steps``), so that the callback costs nothing in between."""

    def __init__(self, *, grad_norm: bool, gpu_memory: bool) -> None:
        super().__init__()
        self.grad_norm = grad_norm
        self.gpu_memory = gpu_memory
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._start = time.perf_counter()
        self._data_time = self._start - self._last_end if self._last_end is not None else 0.0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not self.grad_norm or not logging_step(trainer, stepped=False):
            return
        total = total_grad_norm(pl_module)
        if total is not None:
            pl_module.log("train/grad_norm", total, on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        step_time = now - self._start
        iter_time = step_time + self._data_time
        self._last_end = now
        if not logging_step(trainer, stepped=True):
            return
        n = batch_size_of(batch)
        values = {"train/data_time": self._data_time, "train/step_time": step_time}
        if n and iter_time > 0:
            values["train/throughput"] = n * trainer.world_size / iter_time
        if self.gpu_memory and torch.cuda.is_available() and pl_module.device.type == "cuda":
            values["train/gpu_mem_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        for k, v in values.items():
            pl_module.log(k, float(v), on_step=True, on_epoch=False, batch_size=max(n, 1))
