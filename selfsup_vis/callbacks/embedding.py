"""EmbeddingSnapshot: a 2-D embedding of a fixed validation subset every N epochs, with kNN
accuracy and trustworthiness logged; the embedding, quality numbers and scatter plot are
task=tsne's own (selfsup_vis.embedding, selfsup_vis.embedding.plots)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl

from selfsup_vis.callbacks.base import (
    PeriodicCallback,
    batched_features,
    eval_data_name,
    fixed_samples,
)
from selfsup_vis.checkpoints.provenance import training_provenance
from selfsup_vis.config.callbacks import EmbeddingSnapshotConfig
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.embedding import EmbedParams, compute_embedding, embedding_quality
from selfsup_vis.embedding.plots import plot_embedding
from selfsup_vis.plotting.log import log_scalars
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.utils.io import write_with

log = logging.getLogger(__name__)


@takes_schema(EmbeddingSnapshotConfig)
class EmbeddingSnapshot(PeriodicCallback):
    """Every ``every_n_epochs`` (or ``every_n_steps``): features of ``layer`` (default: the
    model's default layer) for ``num_samples`` validation images chosen by ``seed`` ->
    ``backend`` embedding -> ``<dirpath>/embedding_step<N>.png`` + ``.npz`` (coordinates,
    labels, indices, features), figure ``train/embedding`` and scalars ``embedding/<quality>``
    (kNN accuracy in feature space and in 2-D, trustworthiness) on every logger."""

    subdir = "embeddings"

    def __init__(self, *, every_n_steps: int | None, every_n_epochs: int | None, min_interval_s: float,
                 num_samples: int,
                 layer: str | None, backend: str, perplexity: float, seed: int, batch_size: int,
                 at_train_end: bool, dirpath: str | None, formats: Sequence[str],
                 embed_kwargs: dict[str, Any] | None) -> None:
        super().__init__(every_n_steps, every_n_epochs, min_interval_s, at_train_end, dirpath, formats)
        self.num_samples, self.layer, self.backend = num_samples, layer, backend
        self.perplexity, self.seed, self.batch_size = perplexity, seed, batch_size
        self.embed_kwargs = dict(embed_kwargs or {})
        self._fixed: dict[str, Any] | None = None
        self.history: list[tuple[int, dict[str, Any]]] = []

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fixed is None:
            self._fixed = fixed_samples(trainer, self.num_samples, self.seed)
        fx = self._fixed
        feats, layer = batched_features(pl_module, fx["images"], self.layer, self.batch_size)
        labels = fx["labels"] if (fx["labels"] >= 0).all() else None
        params = EmbedParams(backend=self.backend, seed=self.seed, perplexity=self.perplexity,
                             **self.embed_kwargs)
        result = compute_embedding(feats, params)
        quality = embedding_quality(feats, result.coords, labels, seed=self.seed)
        step = trainer.global_step
        self.history.append((step, quality))
        name = getattr(pl_module, "model_name", type(pl_module).__name__)
        fig = plot_embedding(result.coords, labels, fx["classes"],
                             f"{name} · {layer} · epoch {trainer.current_epoch} · step {step} · "
                             f"{result.params['backend']}", quality)
        add_provenance(fig, training_provenance(
            pl_module, "pretrain/embedding", step, trainer.current_epoch, layer=layer, seed=self.seed,
            dataset=eval_data_name(trainer), n=len(feats)))
        base = self.publish(trainer, fig, f"embedding_step{step:06d}", "train/embedding")
        write_with(base.with_suffix(".npz"), lambda tmp: np.savez_compressed(
            open(tmp, "wb"), coords=result.coords, labels=fx["labels"], indices=fx["indices"],
            features=feats.astype(np.float32)))
        scalars = {f"embedding/{k}": float(v) for k, v in quality.items()
                   if isinstance(v, int | float) and k not in ("n", "n_classes", "knn_feat_queries")}
        log_scalars(trainer.loggers, scalars, step=step)
