"""Training callbacks: collapse numbers, batch sizes, any LightningModule (tuple batches),
drawing errors that must not break training."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from selfsup_vis.callbacks import (
    EmbeddingSnapshot,
    FeatureHealth,
    ReconstructionDump,
    TrainingStats,
    feature_health,
)
from selfsup_vis.callbacks.training_stats import batch_size_of


def test_feature_health_separates_healthy_from_collapsed():
    rng = np.random.default_rng(0)
    healthy = feature_health(rng.normal(size=(128, 16)))
    assert 0.8 < healthy["feature_std_x_sqrt_dim"] < 1.2 and healthy["effective_rank"] > 10
    collapsed = feature_health(np.ones((128, 16)) + 1e-6 * rng.normal(size=(128, 16)))
    assert collapsed["feature_std_x_sqrt_dim"] < 1e-4 and collapsed["effective_rank"] < 1.01
    with pytest.raises(ValueError, match="NaN"):
        feature_health(np.full((4, 3), np.nan))


def test_batch_size_of_formats():
    assert batch_size_of({"image": torch.zeros(5, 3, 8, 8)}) == 5
    assert batch_size_of({"views": [torch.zeros(4, 3, 8, 8)] * 2, "label": torch.zeros(4)}) == 4
    assert batch_size_of((torch.zeros(3, 2), torch.zeros(3))) == 3


class ToyModule(pl.LightningModule):
    """Any LightningModule: tuple batches, (B, D) output, no extract_features."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _toy_loaders():
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(48, 3, 8, 8, generator=g), torch.arange(48) % 4)
    return DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8)


def test_callbacks_work_in_any_lightning_training(tmp_path, caplog):
    every_epoch = {"every_n_steps": None, "every_n_epochs": 1, "min_interval_s": 0}
    health = FeatureHealth(**every_epoch, num_samples=32)
    emb = EmbeddingSnapshot(**every_epoch, num_samples=32, backend="pca")
    rec = ReconstructionDump(**every_epoch)
    logger = CSVLogger(tmp_path, name="csv")
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, log_every_n_steps=1, logger=logger,
                         callbacks=[health, emb, rec, TrainingStats()], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_checkpointing=False, num_sanity_val_steps=1)
    with caplog.at_level(logging.WARNING):
        trainer.fit(ToyModule(), *_toy_loaders())
    assert trainer.global_step == 6
    # fired after epochs 0 and 1 (not during sanity checking); end of training adds nothing new
    assert [s for s, _ in health.history] == [3, 6] and [s for s, _ in emb.history] == [3, 6]
    assert not health.failures and not emb.failures and not rec.failures
    assert "no reconstructions will be drawn" in caplog.text
    assert (tmp_path / "embeddings" / "embedding_step000006.png").is_file()
    metrics = pd.read_csv(next(tmp_path.glob("csv/**/metrics.csv")))
    for col in ("train/throughput", "train/data_time", "train/step_time", "train/grad_norm",
                "health/output/effective_rank", "embedding/knn_feat@10", "embedding/trustworthiness"):
        assert col in metrics.columns and metrics[col].notna().any(), col


def test_schedule_by_steps_and_wall_time_with_first_and_last(tmp_path):
    """A due step fires only when ``min_interval_s`` has passed since the callback's previous
    snapshot or the start of training; the end of training always fires: a long interval leaves
    the final state only, none leaves every due step. Each snapshot's time is recorded."""
    def fit(**schedule):
        health = FeatureHealth(**schedule, num_samples=16, at_train_end=True)
        emb = EmbeddingSnapshot(**schedule, num_samples=16, backend="pca")
        trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, logger=CSVLogger(tmp_path, name="csv"),
                             callbacks=[health, emb], default_root_dir=tmp_path, enable_progress_bar=False,
                             enable_checkpointing=False, num_sanity_val_steps=0)
        trainer.fit(ToyModule(), *_toy_loaders())
        return health, emb

    health, emb = fit(every_n_steps=2, every_n_epochs=None, min_interval_s=3600)
    assert [s for s, _ in health.history] == [6] and [s for s, _ in emb.history] == [6]
    assert [s for s, _ in emb.timings] == [6] and all(t > 0 for _, t in emb.timings)
    health, _ = fit(every_n_steps=2, every_n_epochs=None, min_interval_s=0)
    assert [s for s, _ in health.history] == [2, 4, 6]
    # the figure is drawn once: the CSV logger's copy is the saved PNG
    saved = (tmp_path / "embeddings" / "embedding_step000006.png").read_bytes()
    logged = sorted(tmp_path.glob("csv/**/images/train_embedding_step000006.png"))
    assert logged and logged[-1].read_bytes() == saved
    with pytest.raises(ValueError, match="min_interval_s must be >= 0"):
        FeatureHealth(min_interval_s=-1)


@pytest.mark.slow
def test_drawing_failure_does_not_break_training(tmp_path, monkeypatch, caplog):
    from selfsup_vis.data.transforms import pipeline_for_model
    from selfsup_vis.models import build_model, model_pipeline
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["model=mae_tiny", "dataset.batch_size=4", "dataset.val_samples_per_class=2"], tmp_path)
    import hydra

    dm = hydra.utils.instantiate(cfg.dataset)
    dm.configure(train=model_pipeline(cfg.model), eval=pipeline_for_model(cfg.model, "eval", crop_pct=None))

    def broken(*args, **kwargs):
        raise RuntimeError("figure exploded")

    monkeypatch.setattr("selfsup_vis.callbacks.reconstruction.reconstruction_grid", broken)
    rec = ReconstructionDump(every_n_steps=1, every_n_epochs=None, min_interval_s=0, num_images=2)
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[rec], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_checkpointing=False)
    with caplog.at_level(logging.WARNING):
        trainer.fit(build_model(cfg.model), datamodule=dm)
    assert trainer.global_step == 2
    assert len(rec.failures) == 2 and "figure exploded" in rec.failures[0]
    assert "ReconstructionDump failed at step 1" in caplog.text


def test_each_callback_default_once() -> None:
    """Our callbacks' defaults live in their schemas (config/callbacks.py): the constructors
    have none and conf/callbacks/default.yaml states only what differs; every knob is still
    overridable because the schema supplies the key."""
    import inspect

    import yaml
    from hydra.utils import get_class

    from selfsup_vis.config import conf_dir
    from selfsup_vis.config.callbacks import CALLBACK_SCHEMAS
    from selfsup_vis.config.defaults import restated_defaults
    from tests.conftest import compose_cfg

    classes = [get_class(s._target_) for s in CALLBACK_SCHEMAS.values()]
    assert [d for c in classes for d in restated_defaults(c)] == []
    entries = yaml.safe_load((conf_dir() / "callbacks" / "default.yaml").read_text())
    restated = []
    for name, schema in CALLBACK_SCHEMAS.items():
        defaults = {f: getattr(schema, f, None) for f in schema.__dataclass_fields__}
        restated += [f"{name}.{k}" for k, v in (entries.get(name) or {}).items()
                     if k in defaults and not inspect.isfunction(defaults[k]) and defaults[k] == v]
    assert restated == []
    cfg = compose_cfg(["task=pretrain", "callbacks.reconstruction.every_n_steps=7",
                       "callbacks.embedding.perplexity=5"]).callbacks
    assert cfg.reconstruction.every_n_steps == 7 and cfg.embedding.perplexity == 5
    assert cfg.embedding.every_n_epochs is None and cfg.feature_health.at_train_end is True
    assert cfg.embedding.min_interval_s == 300 and cfg.feature_health.min_interval_s == 60
    with pytest.raises(Exception, match="num_image"):
        compose_cfg(["task=pretrain", "callbacks.reconstruction.num_image=2"])
