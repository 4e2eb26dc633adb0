"""ReconstructionDump: the four-panel reconstruction grid of a fixed set of validation images
with fixed masks during training, so that steps can be compared (same figure code and the same
mask drawing as task=reconstruct)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from selfsup_vis.callbacks.base import PeriodicCallback, eval_data_name, fixed_samples
from selfsup_vis.checkpoints.provenance import training_provenance
from selfsup_vis.config.callbacks import ReconstructionDumpConfig
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.reconstruction.compute import DisplayOptions, reconstruct_batch, save_arrays
from selfsup_vis.reconstruction.masks import make_masks, masked_image_model
from selfsup_vis.reconstruction.plots import reconstruction_grid

log = logging.getLogger(__name__)


@takes_schema(ReconstructionDumpConfig)
class ReconstructionDump(PeriodicCallback):
    """Every ``every_n_steps`` / ``every_n_epochs``: ``num_images`` validation images (chosen
    by ``seed``) with masks from ``seed`` (and ``mask_ratio``, default the model's) through
    ``reconstruct``; the grid goes to ``<dirpath>/reconstruction_step<N>.png`` (+ ``.npz``) and to
    every logger as ``train/reconstruction``, the mean masked-patch error as
    ``train/reconstruction_error``. Models without ``reconstruct`` are skipped with one warning.
    Shown exactly as task=reconstruct shows them (``display``: by default no hidden statistics)."""

    subdir = "reconstructions"

    def __init__(self, *, every_n_steps: int | None, every_n_epochs: int | None, num_images: int,
                 seed: int, mask_ratio: float | None, at_train_end: bool, dirpath: str | None,
                 formats: Sequence[str], save_arrays: bool, display: str, display_neighbours: int,
                 mask_fill: Sequence[float], mask_outline: bool) -> None:
        super().__init__(every_n_steps, every_n_epochs, at_train_end, dirpath, formats)
        self.display = DisplayOptions(str(display), int(display_neighbours),
                                      tuple(float(v) for v in mask_fill), bool(mask_outline))
        self.num_images = num_images
        self.seed = seed
        self.mask_ratio = mask_ratio
        self.save_arrays = save_arrays
        self._fixed: dict[str, Any] | None = None
        self._masks: torch.Tensor | None = None
        self._unsupported = False
        self.history: list[tuple[int, float]] = []  # (global step, mean masked error)

    def summary_fields(self) -> dict[str, Any]:
        """The pretrain summary's ``reconstruction_error`` (a :class:`SummaryContributor`)."""
        return {"reconstruction_error": [{"step": s, "error": e} for s, e in self.history]} if self.history else {}

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unsupported:
            return
        try:
            model = masked_image_model(pl_module)
        except TypeError as err:
            self._unsupported = True
            log.warning("ReconstructionDump: %s; no reconstructions will be drawn", err)
            return
        if self._fixed is None:
            self._fixed = fixed_samples(trainer, self.num_images, self.seed)
            self._masks = make_masks(model, len(self._fixed["names"]), self.seed, self.mask_ratio)
        names = [f"#{i} {n}"[:40] for i, n in zip(self._fixed["indices"], self._fixed["names"], strict=True)]
        recs = reconstruct_batch(model, self._fixed["images"], self._masks, names, self.display)
        step = trainer.global_step
        err = float(np.mean([r.error for r in recs]))
        self.history.append((step, err))
        title = (f"{model.model_name} ({model.schema.family}) · epoch "
                 f"{trainer.current_epoch} · step {step} · masked {recs[0].error_kind} {err:.4f}")
        fig = reconstruction_grid([r.panels for r in recs], title, recs[0].display["rule"])
        add_provenance(fig, training_provenance(
            pl_module, "pretrain/reconstruction", step, trainer.current_epoch, seed=self.seed,
            dataset=eval_data_name(trainer), n=len(recs)))
        base = self.out_dir(trainer) / f"reconstruction_step{step:06d}"
        save_figure(fig, base, self.formats)
        if self.save_arrays:
            save_arrays(base.with_suffix(".npz"), recs)
        log_figure(trainer.loggers, "train/reconstruction", fig, step=step)
        fig.clf()
        scalars = {"train/reconstruction_error": err}
        if recs[0].psnr_db is not None:  # PSNR of what the figure shows, masked pixels
            scalars["train/reconstruction_psnr_db"] = float(np.mean([r.psnr_db for r in recs]))
        log_scalars(trainer.loggers, scalars, step=step)
