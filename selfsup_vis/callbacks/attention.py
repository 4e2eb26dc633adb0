"""AttentionSnapshot: where the model looks on a fixed set of validation images during
training -- CLS attention per head of a ViT (or any method of ``task=attention``, with the
same code) -- so a run shows attention sharpening; on data with object masks (the synthetic
default) the pointing game and the energy inside the object are logged as numbers too."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from selfsup_vis.attention.compute import MapSpec, check_spec, compute_maps
from selfsup_vis.attention.layers import find_network
from selfsup_vis.attention.metric import PointingGame
from selfsup_vis.attention.plots import grid_figure
from selfsup_vis.callbacks.base import (
    PeriodicCallback,
    eval_data_name,
    fixed_object_masks,
    fixed_samples,
)
from selfsup_vis.checkpoints.provenance import training_provenance
from selfsup_vis.config.callbacks import AttentionSnapshotConfig
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.data.transforms import denormalize
from selfsup_vis.plotting.log import log_scalars
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.utils.io import save_npy

log = logging.getLogger(__name__)


@takes_schema(AttentionSnapshotConfig)
class AttentionSnapshot(PeriodicCallback):
    """Every ``every_n_steps`` / ``every_n_epochs``: maps of ``num_images`` validation images
    (chosen by ``seed``) -> ``<dirpath>/attention_step<N>.png`` (+ ``.npy``) and every logger
    as ``train/attention``; with object masks ``train/attention_pointing`` and
    ``train/attention_energy_inside``. ``method`` null: ``cls_attention`` for ViTs, else the
    class-agnostic ``feature_norm``. A model the method cannot serve is skipped with one warning."""

    subdir = "attention"

    def __init__(self, *, every_n_steps: int | None, every_n_epochs: int | None, min_interval_s: float,
                 num_images: int, method: str | None, block: int | None, layer: str | None, head_fusion: str,
                 discard_ratio: float, seed: int, alpha: float, colormap: str, at_train_end: bool,
                 dirpath: str | None, formats: Sequence[str], save_arrays: bool) -> None:
        super().__init__(every_n_steps, every_n_epochs, min_interval_s, at_train_end, dirpath, formats)
        self.num_images, self.method, self.block, self.layer = num_images, method, block, layer
        self.head_fusion, self.discard_ratio, self.seed = head_fusion, discard_ratio, seed
        self.alpha, self.colormap, self.save_arrays = alpha, colormap, save_arrays
        self._fixed: dict[str, Any] | None = None
        self._masks: torch.Tensor | None = None
        self._spec: MapSpec | None = None
        self._unsupported = False
        self.history: list[tuple[int, float, float]] = []  # (step, pointing accuracy, energy inside)

    def _resolve(self, pl_module: pl.LightningModule) -> MapSpec:
        method = self.method or ("cls_attention" if find_network(pl_module).kind == "vit" else "feature_norm")
        spec = MapSpec(method, self.layer, self.block, self.head_fusion, self.discard_ratio)
        check_spec(pl_module, spec)
        return spec

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unsupported:
            return
        if self._spec is None:
            try:
                self._spec = self._resolve(pl_module)
            except (TypeError, ValueError) as err:
                self._unsupported = True
                log.warning("AttentionSnapshot: %s; no attention maps will be drawn", err)
                return
        if self._fixed is None:
            self._fixed = fixed_samples(trainer, self.num_images, self.seed)
            self._masks = fixed_object_masks(trainer, self._fixed, int(self._fixed["images"].shape[-2]))
        images = self._fixed["images"].to(pl_module.device)
        autocast = None
        if pl_module.device.type == "cuda" and str(trainer.precision).startswith("bf16"):
            autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        res = compute_maps(pl_module, images, self._spec, autocast=autocast)
        step = trainer.global_step
        scored = res.maps[:, res.scored]
        suffix = ""
        if self._masks is not None:
            metric = PointingGame(sync_on_compute=False)  # rank zero alone: no collective
            metric.update(torch.from_numpy(scored), self._masks)
            score = metric.compute()
            acc, energy = float(score["pointing_accuracy"]), float(score["energy_inside"])
            self.history.append((step, acc, energy))
            log_scalars(trainer.loggers, {"train/attention_pointing": acc,
                                          "train/attention_energy_inside": energy}, step=step)
            suffix = f" · pointing {acc:.2f} · energy inside {energy:.2f} (area {float(score['area_fraction']):.2f})"
        mean = getattr(pl_module, "mean", (0.485, 0.456, 0.406))
        std = getattr(pl_module, "std", (0.229, 0.224, 0.225))
        display = denormalize(self._fixed["images"].float(), mean, std).permute(0, 2, 3, 1).numpy()
        names = [f"#{i} {n}"[:40] for i, n in zip(self._fixed["indices"], self._fixed["names"], strict=True)]
        masks = list(self._masks.numpy()) if self._masks is not None else None
        title = (f"{getattr(pl_module, 'model_name', type(pl_module).__name__)} · {self._spec.method} · "
                 f"layer {res.layer} · epoch {trainer.current_epoch} · step {step}{suffix}")
        fig = grid_figure(display, list(res.maps), res.labels, names, title, None, self.alpha, self.colormap,
                          masks, max_cols=1 if len(res.keys) > 3 else 4)
        add_provenance(fig, training_provenance(
            pl_module, "pretrain/attention", step, trainer.current_epoch, seed=self.seed, layer=res.layer,
            dataset=eval_data_name(trainer), n=len(names)))
        base = self.publish(trainer, fig, f"attention_step{step:06d}", "train/attention")
        if self.save_arrays:
            save_npy(base.with_suffix(".npy"), res.maps)
