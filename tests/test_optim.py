"""Optimizer, schedule and clipping come from the model's recipe (config/model.py, the one
source): MoCo v2 trains with SGD whether built from YAML or from an mmpretrain config, lr scales
with the effective batch, the schedule fits max_steps / max_time, clipping is applied."""

from __future__ import annotations

import math

import hydra
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model, model_pipeline
from selfsup_vis.models.mmconfig import model_config_from_mm
from selfsup_vis.models.optim import RunLength, warmup_cosine
from tests.conftest import compose_cfg, run_main

MM_MOCOV2 = {"type": "MoCo", "queue_len": 65536, "feat_dim": 128, "momentum": 0.001,
             "backbone": {"type": "ResNet", "depth": 50}, "neck": {"type": "MoCoV2Neck", "hid_channels": 2048},
             "head": {"type": "ContrastiveHead", "temperature": 0.2}}


def _recipe(m) -> dict:
    opt = m.optimizer_factory
    return {"optimizer": (opt.func, dict(opt.keywords)), "scheduler": dict(m.scheduler_factory.keywords),
            "lr_base_batch": m.lr_base_batch, "no_weight_decay": m.no_weight_decay,
            "exclude_1d": m.weight_decay_exclude_1d, "clip": m.gradient_clip_val}


def test_mocov2_trains_with_sgd_from_yaml_and_from_mmpretrain_config():
    cfg = compose_cfg(["task=pretrain", "model=mocov2"])
    assert cfg.model.optimizer._target_ == "torch.optim.SGD"
    yaml_model = build_model(cfg.model, device="meta")
    mm_model = build_model(model_config_from_mm(MM_MOCOV2, name="mocov2_r50"), device="meta")
    assert _recipe(yaml_model) == _recipe(mm_model)
    r = _recipe(yaml_model)
    assert r["optimizer"][0] is torch.optim.SGD
    assert r["optimizer"][1] == {"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False}
    assert r["scheduler"]["warmup_epochs"] == 0 and r["lr_base_batch"] == 256 and not r["exclude_1d"]


def test_cli_cfg_job_shows_sgd_for_mocov2_tiny(tmp_path):
    proc = run_main(["task=pretrain", "model=mocov2_tiny", "--cfg", "job"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = OmegaConf.create(proc.stdout).model
    assert model.optimizer._target_ == "torch.optim.SGD" and model.optimizer.momentum == 0.9


@pytest.mark.parametrize("name,target,lr,base,clip", [
    ("mae_vit-b16", "torch.optim.AdamW", 1.5e-4, 256, None),
    ("simmim_swin-b", "torch.optim.AdamW", 2e-4, 512, 5.0),
    ("maskfeat_vit-b16", "torch.optim.AdamW", 1.6e-3, 2048, 0.02),
    ("mocov2_r50", "torch.optim.SGD", 0.03, 256, None),
])
def test_recipes_are_mmselfsup_defaults(name, target, lr, base, clip):
    m = compose_cfg([f"model={name}"]).model
    assert m.optimizer._target_ == target and m.optimizer._partial_
    assert m.optimizer.lr == pytest.approx(lr) and m.lr_base_batch == base and m.gradient_clip_val == clip


def _fit(model_name: str, *overrides: str, tmp_path, **trainer_kw) -> pl.LightningModule:
    cfg = compose_cfg([f"model={model_name}", "dataset.batch_size=4", *overrides], tmp_path)
    model = build_model(cfg.model)
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.configure(train=model_pipeline(cfg.model), eval=pipeline_for_model(cfg.model, "eval"))
    trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, **trainer_kw)
    trainer.fit(model, datamodule=dm)
    model.fitted_trainer = trainer
    return model


def test_lr_scales_with_the_effective_batch_and_moco_decays_every_parameter(tmp_path):
    m = _fit("mocov2_tiny", tmp_path=tmp_path, max_steps=2, accumulate_grad_batches=2)
    opt = m.fitted_trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert m.optim_summary["effective_batch"] == 8  # 4 images x 1 device x 2 accumulated
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(0.03 * 8 / 256)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-4  # MMSelfSup: all


def test_mae_groups_without_decay_follow_timm(tmp_path):
    cfg = compose_cfg(["model=mae_tiny"])
    m = build_model(cfg.model)
    names = m.no_weight_decay_names()
    assert "encoder.cls_token" in names and "decoder.mask_token" in names
    from selfsup_vis.models.optim import param_groups

    groups = param_groups(m, 0.05, names, True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    params = dict(m.named_parameters())
    assert id(params["encoder.cls_token"]) in no_decay and id(params["encoder.blocks.0.norm1.weight"]) in no_decay
    assert id(params["encoder.blocks.0.attn.qkv.bias"]) in no_decay
    assert id(params["encoder.blocks.0.attn.qkv.weight"]) not in no_decay
    assert not params["encoder.pos_embed"].requires_grad  # MAE's fixed sin-cos: not optimised at all


def test_gradient_clip_from_the_model_config(tmp_path):
    norms: list[float] = []

    class AfterStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms.append(float(torch.nn.utils.get_total_norm(grads)))

    _fit("maskfeat_tiny", tmp_path=tmp_path, max_steps=2, callbacks=[AfterStep()])
    assert norms and max(norms) <= 0.02 * (1 + 1e-4)  # MaskFeat's recipe clips at 0.02


def _lrs(run: RunLength, steps: int, **kw) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, run, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedule_fits_max_steps_with_the_recipes_warmup_fraction():
    # MAE: 40 of 300 epochs warmup; a 100-step run (10 steps/epoch) is shorter than 40 epochs
    lrs = _lrs(RunLength(100, 10), 101, warmup_epochs=40, recipe_epochs=300, warmup_start_factor=1e-4)
    peak = max(range(101), key=lambda i: lrs[i])
    assert peak == 13 or peak == 14  # 40/300 of 100 steps
    assert lrs[0] == pytest.approx(1e-4) and lrs[100] == pytest.approx(0.0, abs=1e-12)
    # a run longer than the warmup uses it in epochs: 2 epochs of 10 steps in a 100-step run
    lrs = _lrs(RunLength(100, 10), 101, warmup_epochs=2, recipe_epochs=300)
    assert max(range(101), key=lambda i: lrs[i]) == 20
    # cosine to the floor eta_min_ratio x lr at the end
    assert _lrs(RunLength(10, 10), 11, eta_min_ratio=0.05)[10] == pytest.approx(0.05)


def test_schedule_fits_max_time():
    clock = {"t": 0.0}
    run = RunLength(math.inf, 10, max_seconds=100.0, elapsed=lambda: clock["t"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, run, warmup_epochs=10, recipe_epochs=100)
    seen = []
    for t in (5.0, 10.0, 55.0, 100.0):
        clock["t"] = t
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)  # half the 10 % warmup
    assert seen[1] == pytest.approx(1.0) and seen[2] == pytest.approx(0.5) and seen[3] == pytest.approx(0.0, abs=1e-12)


def test_max_time_run_uses_the_time_schedule(tmp_path):
    m = _fit("mae_tiny", tmp_path=tmp_path, max_time={"seconds": 30}, max_steps=2)
    assert m.optim_summary["max_seconds"] == pytest.approx(30.0)
