"""DenseSnapshot: PCA->RGB, foreground, similarity and token norms of a fixed set of validation
images during training (``task=dense``'s code), with the PCA basis fitted at the first call and
kept, so colours are comparable across training; with object masks (synthetic data) the
foreground IoU is logged as ``train/dense_foreground_iou``, always the outlier fraction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from selfsup_vis.callbacks.base import (
    PeriodicCallback,
    eval_data_name,
    fixed_object_masks,
    fixed_samples,
)
from selfsup_vis.checkpoints.provenance import training_provenance
from selfsup_vis.config.callbacks import DenseSnapshotConfig
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.data.transforms import denormalize
from selfsup_vis.dense.compute import DenseSettings, analyse, extract, fit
from selfsup_vis.dense.grids import grid_layers
from selfsup_vis.dense.outputs import save_arrays
from selfsup_vis.dense.pca import BASIS_FILE, DenseBasis
from selfsup_vis.dense.plots import layer_figure
from selfsup_vis.plotting.log import log_scalars
from selfsup_vis.plotting.provenance import add_provenance

log = logging.getLogger(__name__)


@takes_schema(DenseSnapshotConfig)
class DenseSnapshot(PeriodicCallback):
    """Every ``every_n_steps`` / ``every_n_epochs``: ``<dirpath>/dense_step<N>.png`` (+ ``.npz``)
    of ``num_images`` validation images (chosen by ``seed``) at ``layer`` (null: the model's
    last grid layer); the basis is saved once as ``<dirpath>/pca_basis.npz``. A model without a
    grid layer is skipped with one warning."""

    subdir = "dense"

    def __init__(self, *, every_n_steps: int | None, every_n_epochs: int | None, min_interval_s: float,
                 num_images: int,
                 layer: str | None, normalisation: str, foreground: bool, outlier_k: float, seed: int,
                 at_train_end: bool, dirpath: str | None, formats: Sequence[str], save_arrays: bool) -> None:
        super().__init__(every_n_steps, every_n_epochs, min_interval_s, at_train_end, dirpath, formats)
        self.num_images, self.layer, self.seed, self.save_arrays = num_images, layer, seed, save_arrays
        self.settings = DenseSettings(normalisation=str(normalisation), foreground=foreground,
                                      outlier_k=float(outlier_k), max_pairs=0)
        self.basis: DenseBasis | None = None
        self._fixed: dict[str, Any] | None = None
        self._masks: torch.Tensor | None = None
        self._unsupported = False
        self.history: list[tuple[int, float | None, float]] = []  # (step, foreground IoU, outlier fraction)

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unsupported:
            return
        if self.layer is None or self._fixed is None:
            valid = grid_layers(pl_module)
            if not valid or (self.layer is not None and self.layer not in valid):
                self._unsupported = True
                log.warning("DenseSnapshot: %s has no grid layer %s (grid layers: %s); no dense figures",
                            type(pl_module).__name__, self.layer or "", ", ".join(valid) or "none")
                return
            self.layer = self.layer or valid[-1]
            self._fixed = fixed_samples(trainer, self.num_images, self.seed)
            self._masks = fixed_object_masks(trainer, self._fixed, int(self._fixed["images"].shape[-1]))
        images = self._fixed["images"]
        feats = extract(pl_module, [self.layer], images, len(images), pl_module.device)[self.layer]
        out = self.out_dir(trainer)
        if self.basis is None:  # fitted once: later snapshots use the same colours
            self.basis = fit(feats, self.settings, {"model": getattr(pl_module, "model_name", ""),
                                                    "layer": self.layer, "step": trainer.global_step})
            self.basis.save(out / BASIS_FILE)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        res = analyse(feats, self.settings, size, self.basis, self._masks)
        step = trainer.global_step
        scalars = {"train/dense_outlier_fraction": res.norm_stats.outlier_fraction}
        if res.iou is not None:
            scalars["train/dense_foreground_iou"] = res.iou["iou"]
        self.history.append((step, res.iou["iou"] if res.iou else None, res.norm_stats.outlier_fraction))
        log_scalars(trainer.loggers, scalars, step=step)
        display = denormalize(images.float(), getattr(pl_module, "mean", (0.485, 0.456, 0.406)),
                              getattr(pl_module, "std", (0.229, 0.224, 0.225))).permute(0, 2, 3, 1).numpy()
        names = [f"#{i} {n}"[:40] for i, n in zip(self._fixed["indices"], self._fixed["names"], strict=True)]
        title = (f"{getattr(pl_module, 'model_name', type(pl_module).__name__)} · layer {self.layer} · "
                 f"epoch {trainer.current_epoch} · step {step} · basis fitted at step {self.basis.provenance['step']}")
        fig = layer_figure(display, res, names, title, self.settings.describe(), None,
                           self._masks.numpy() if self._masks is not None else None)
        add_provenance(fig, training_provenance(pl_module, "pretrain/dense", step, trainer.current_epoch,
                                                seed=self.seed, layer=self.layer, dataset=eval_data_name(trainer),
                                                n=len(names)))
        base = self.publish(trainer, fig, f"dense_step{step:06d}", "train/dense")
        if self.save_arrays:
            save_arrays(base.with_suffix(".npz"), res)
