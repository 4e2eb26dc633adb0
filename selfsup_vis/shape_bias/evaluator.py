"""The LightningModule that runs a classifier over cue-conflict images under ``Trainer.test``
and feeds the ShapeBias metric (DDP-exact: the metric gathers per-sample states)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from selfsup_vis.shape_bias.metric import ShapeBias, summary_from_compute


class ShapeBiasEvaluator(pl.LightningModule):
    """Wraps a classifier for ``Trainer.test``: logits -> ``ShapeBias.update`` per batch; the
    metric's ``compute`` (synced across ranks) at the end of the epoch."""

    def __init__(self, classifier: torch.nn.Module, metric: ShapeBias) -> None:
        super().__init__()
        self.classifier = classifier
        self.metric = metric
        self.summary: dict[str, Any] | None = None
        self.rows: list[dict[str, Any]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        if batch["index"].numel() == 0:  # every image of the batch was skipped
            return
        logits = self(batch["image"])
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"the classifier's forward returned {type(logits).__name__}, "
                            "expected a (batch, classes) logits tensor")
        self.metric.update(logits, list(batch["name"]), index=batch["index"])

    def on_test_epoch_end(self) -> None:
        out = self.metric.compute()  # gathers the per-sample states of every rank
        self.summary = summary_from_compute(out, self.metric.categories)
        self.rows = self.metric.rows()
        scalars = {f"shape_bias/{k}": self.summary[k]
                   for k in ("shape_bias", "shape_accuracy", "texture_accuracy", "accuracy")}
        scalars.update({f"shape_bias/category/{c}": v
                        for c, v in self.summary["shape_bias_per_category"].items()})
        scalars.update({f"shape_bias/{k}": float(v) for k, v in self.summary["counts"].items()})
        # the values are already global (identical on every rank): the mean sync keeps them
        self.log_dict(scalars, sync_dist=True)
