"""task=pretrain: every algorithm trains, callbacks write figures and scalars to the CSV log,
resume from last.ckpt, a resume checkpoint of another model is refused, MAE learns."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from selfsup_vis.config.tasks_train import IMAGENET_MEAN_FILL
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model, model_pipeline
from selfsup_vis.reconstruction.compute import DisplayOptions, reconstruct_batch
from selfsup_vis.reconstruction.masks import make_masks
from selfsup_vis.tasks.pretrain import ResumeError, check_resume_checkpoint
from tests.conftest import assert_ok, compose_cfg, run_main

SMALL = ["dataset.batch_size=8", "dataset.val_samples_per_class=4", "trainer.enable_progress_bar=false",
         "trainer.log_every_n_steps=1"]


@pytest.mark.slow
def test_pretrain_cli_callbacks_scalars_and_resume(tmp_path):
    out = tmp_path / "a"
    proc = run_main(["task=pretrain", "model=mae_tiny", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                    *SMALL, "callbacks.embedding.every_n_steps=3", "callbacks.embedding.min_interval_s=0", "callbacks.embedding.num_samples=32",
                    "callbacks.embedding.backend=pca", "callbacks.feature_health.num_samples=32",
                    "callbacks.feature_health.every_n_steps=3", "callbacks.feature_health.min_interval_s=0",
                    "callbacks.reconstruction.num_images=2", "callbacks.reconstruction.every_n_steps=3", "callbacks.reconstruction.min_interval_s=0",
                    "callbacks.checkpoint.every_n_epochs=null",
                    "callbacks.checkpoint.every_n_train_steps=3",
                    f"hydra.run.dir={out}"], tmp_path)
    assert_ok(proc)
    s = json.loads((out / "summary.json").read_text())
    assert s["global_step"] == 6 and s["epochs"] == 2 and not s["callback_failures"]
    assert s["checkpoints"]["last"] == str(out / "checkpoints" / "last.ckpt")
    # last.ckpt + the rolling latest-epoch.ckpt behind it + two periodic checkpoints
    assert sorted(Path(p).name for p in s["checkpoints"]["saved"]) == [
        "epoch000-step000003.ckpt", "epoch001-step000006.ckpt", "last.ckpt", "latest-epoch.ckpt"]
    assert [r["step"] for r in s["reconstruction_error"]] == [3, 6]
    for f in ("reconstructions/reconstruction_step000003.png", "reconstructions/reconstruction_step000006.npz",
              "embeddings/embedding_step000006.png", "checkpoints/last.ckpt",
              "checkpoints/epoch000-step000003.ckpt", "checkpoints/epoch001-step000006.ckpt"):
        assert (out / f).is_file(), f
    assert (out / "reconstructions/reconstruction_step000006.png").stat().st_size > 20_000
    assert list((out / "csv").glob("**/images/train_reconstruction_step000006.png"))
    metrics = pd.read_csv(next(out.glob("csv/**/metrics.csv")))
    for col in ("train/loss", "lr-AdamW/pg1", "train/throughput", "train/data_time", "train/grad_norm",
                "train/reconstruction_error", "health/norm.mean/effective_rank", "health/norm.mean/feature_std",
                "embedding/knn_feat@10", "embedding/knn_2d@10"):
        assert col in metrics.columns and metrics[col].notna().any(), col
    lr = metrics["lr-AdamW/pg1"].dropna().to_numpy()
    assert lr.max() > lr[-1] > 0  # warmup then cosine decay

    # resume: the step and epoch continue, nothing is redone
    proc = run_main(["task=pretrain", "model=mae_tiny", "trainer.max_epochs=3", "trainer.limit_train_batches=3",
                    *SMALL, "callbacks=none", f"task.ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
                    f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert_ok(proc)
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["resumed_from"]["global_step"] == 6 and b["global_step"] == 9
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()  # default callbacks added
    assert not list((tmp_path / "b" / "checkpoints").glob("epoch*"))  # periodic ones every 10 epochs


def test_resume_checkpoint_of_another_model_is_refused(tmp_path):
    mae = build_model(compose_cfg(["model=mae_tiny"]).model)
    ckpt = tmp_path / "mae_last.ckpt"
    torch.save({"state_dict": mae.state_dict(), "pytorch-lightning_version": pl.__version__,
                "hyper_parameters": {"name": "mae_tiny"}, "epoch": 0, "global_step": 1}, ckpt)
    maskfeat = build_model(compose_cfg(["model=maskfeat_tiny"]).model)
    with pytest.raises(ResumeError, match=r"saved from 'mae_tiny', but the configured model is MaskFeat "
                                          r"'maskfeat_tiny'"):
        check_resume_checkpoint(ckpt, maskfeat)
    assert check_resume_checkpoint(ckpt, mae)["global_step"] == 1
    torch.save({"state_dict": mae.state_dict()}, tmp_path / "weights.pth")
    with pytest.raises(ResumeError, match="not a Lightning training checkpoint.*model.checkpoint="):
        check_resume_checkpoint(tmp_path / "weights.pth", mae)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["simmim_tiny", "maskfeat_tiny", "mocov2_tiny"])
def test_pretrain_other_algorithms(model, compose_in, tmp_path):
    from selfsup_vis.tasks.common import run_task

    cfg = compose_in(["task=pretrain", f"model={model}", "trainer.max_steps=2", *SMALL, "dataset.batch_size=4",
                      "callbacks.embedding=null", "callbacks.feature_health.num_samples=16",
                      "callbacks.reconstruction.num_images=2"])
    s = run_task(cfg)
    assert s["global_step"] == 2 and np.isfinite(s["final_metrics"]["train/loss"])
    assert not s["callback_failures"]
    has_recon = model != "mocov2_tiny"
    assert bool(list((tmp_path / "reconstructions").glob("*.png"))) == has_recon


@pytest.mark.slow
def test_tiny_mae_learns(tmp_path):
    """A few dozen steps: the training loss and the masked-patch error of fixed images drop."""
    torch.manual_seed(0)
    cfg = compose_cfg(["model=mae_tiny", "dataset.batch_size=16", "model.optimizer.lr=2e-3"], tmp_path)
    model = build_model(cfg.model)
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.configure(train=model_pipeline(cfg.model), eval=pipeline_for_model(cfg.model, "eval", crop_pct=None))
    val = dm.dataset("val", dm.eval_pipeline)
    images = torch.stack([val[i]["image"] for i in range(0, len(val), 8)])
    masks = make_masks(model, len(images), seed=0)

    def masked_error() -> float:
        model.eval()
        shown = DisplayOptions("visible", 4, IMAGENET_MEAN_FILL, True)  # the error is the target space's
        err = np.mean([r.error for r in reconstruct_batch(model, images, masks, ["x"] * len(images), shown)])
        model.train()
        return float(err)

    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    before = masked_error()
    trainer = pl.Trainer(max_steps=40, logger=False, callbacks=[Record()], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    after = masked_error()
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    assert after < 0.9 * before, (before, after)


def test_checkpoint_dir_reaches_the_default_callbacks(compose_in, tmp_path):
    """D4: task.checkpoint_dir used to be ignored by conf/callbacks/default.yaml's checkpoints."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from selfsup_vis.tasks.common import instantiate_callbacks

    target = tmp_path / "my_checkpoints"
    cfg = compose_in(["task=pretrain", f"task.checkpoint_dir={target}"])
    ckpts = [c for c in instantiate_callbacks(cfg) if isinstance(c, ModelCheckpoint)]
    assert ckpts and {c.dirpath for c in ckpts} == {str(target)}
    default = compose_in(["task=pretrain"])
    dirs = {c.dirpath for c in instantiate_callbacks(default) if isinstance(c, ModelCheckpoint)}
    assert dirs == {str(tmp_path / "checkpoints")}
