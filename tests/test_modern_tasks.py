"""task=tsne, task=attention and task=reconstruct end to end on the released-format fixtures
(DINOv2 with registers, DINOv3, official MAE), the presets' sizes overridden from each
fixture's JSON; wrong-family and encoder-only checkpoints refused with clear messages; no
network needed (offline Hub ids fail at once)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from selfsup_vis.checkpoints.loading import CheckpointError
from selfsup_vis.models import build_model
from tests.conftest import compose_cfg, run_task
from tests.modern_helpers import checkpoint_path, mae_kwargs, needs_modern, vit_kwargs

pytestmark = needs_modern
PRESET = {"dinov2_reg": "dinov2_vits14_reg", "dinov3": "dinov3_vits16", "dinov2": "dinov2_vits14",
          "dino_hub": "dino_vits16", "mae_visualize": "mae_official_vit-b16",
          "mae_pretrain": "mae_official_vit-b16"}
QUIET = ["logger=csv", "dataset.num_classes=3", "dataset.val_samples_per_class=3"]


def model_overrides(name: str) -> list[str]:
    kw = mae_kwargs(name) if name.startswith("mae") else vit_kwargs(name)
    kw.pop("name")
    kw.pop("mask_ratio", None)
    kw.pop("release", None)
    out = [f"model={PRESET[name]}", f"model.checkpoint={checkpoint_path(name)}"]
    for k, v in kw.items():
        out.append(f"model.{k}={'null' if v is None else v}")
    return out


_QUICK_POOLINGS = {("dinov2_reg", "reg"), ("dinov3", "cls+mean"), ("mae_visualize", "mean")}


# every family once in the quick set (test_poolings_never_mix_prefix_tokens_into_patches checks
# each pooling's values); the other pairs are slow
@pytest.mark.parametrize(("name", "pooling"), [
    (n, p) if (n, p) in _QUICK_POOLINGS else pytest.param(n, p, marks=pytest.mark.slow)
    for n, p in [*((n, p) for n in ("dinov2_reg", "dinov3") for p in ("cls", "mean", "reg", "cls+mean")),
                 ("mae_visualize", "cls"), ("mae_visualize", "mean")]])
def test_tsne_poolings(compose_in, tmp_path, name, pooling):
    cfg = compose_in(["task=tsne", *model_overrides(name), f"task.pooling={pooling}",
                      "task.max_samples_per_class=4", *QUIET])
    summary = run_task(cfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["n_samples"] == summary["n_samples"] == 9  # 3 classes x 3 validation images
    for layer in saved["layers"]:
        coords = np.load(tmp_path / f"embedding_{layer}.npy")
        assert coords.shape == (9, 2) and np.isfinite(coords).all()
    assert "RANDOM" not in json.dumps(saved.get("provenance", {}))


@pytest.mark.parametrize("name", ["dinov2_reg", "dinov3"])
def test_poolings_never_mix_prefix_tokens_into_patches(name):
    import torch

    from tests.modern_helpers import build, io

    model = build(name)
    x = io(name)["inputs"]["other"]
    t = model.block_tokens(x, -1)
    feats = model.extract_features(x, ["norm.cls", "norm.mean", "norm.reg", "norm.cls+mean"])
    assert torch.equal(feats["norm.cls"], t.cls)
    assert torch.allclose(feats["norm.mean"], t.patches.mean(1))
    assert torch.allclose(feats["norm.reg"], t.registers.mean(1))
    assert torch.allclose(feats["norm.cls+mean"], torch.cat([t.cls, t.patches.mean(1)], 1))


# each family and each method once in the quick set; every other pair is slow
@pytest.mark.parametrize(("method", "name"), [
    ("cls_attention", "dinov2_reg"), ("rollout", "dinov3"), ("cls_attention", "mae_visualize"),
    *(pytest.param(m, n, marks=pytest.mark.slow) for m, n in
      [("rollout", "dinov2_reg"), ("cls_attention", "dinov3"), ("rollout", "mae_visualize")])])
def test_attention_task(compose_in, tmp_path, name, method):
    cfg = compose_in(["task=attention", *model_overrides(name), f"task.method={method}",
                      "task.max_images=2", "task.batch_size=2", *QUIET])
    run_task(cfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    entry = next(iter(saved["results"].values()))
    maps = np.load(entry["maps"])
    assert maps.shape[0] == 2 and np.isfinite(maps).all()
    heads = (mae_kwargs if name.startswith("mae") else vit_kwargs)(name)["num_heads"]
    assert entry["panels"] == ([f"head{i}" for i in range(heads)] + ["mean"] if method == "cls_attention"
                               else ["rollout"])


def test_attention_task_dino_head_threshold(compose_in, tmp_path):
    """task.head_threshold=0.6: per image the DINO figure; each saved head mask is the smallest
    set of patches holding 60 % of that head's CLS attention (of the saved grid maps); refused
    with another method."""
    cfg = compose_in(["task=attention", *model_overrides("dinov2_reg"), "task.head_threshold=0.6",
                      "task.max_images=2", "task.batch_size=2", "task.max_figures=1", *QUIET])
    run_task(cfg)
    entry = next(iter(json.loads((tmp_path / "summary.json").read_text())["results"].values()))
    ht = entry["head_threshold"]
    masks, grid = np.load(ht["masks"]), np.load(entry["maps"].replace(".npy", "_grid.npy"))[:, :-1]
    assert masks.shape == grid.shape and masks.dtype == bool and len(ht["figures"]) == 1
    g = grid.reshape(*grid.shape[:2], -1)
    g = g / g.sum(-1, keepdims=True)
    m = masks.reshape(g.shape)
    kept = (g * m).sum(-1)
    assert (kept >= 0.6 - 1e-5).all()  # at least 60 % of the mass ...
    smallest_in = np.where(m, g, np.inf).min(-1)
    assert (kept - smallest_in < 0.6 + 1e-5).all()  # ... and no patch could be dropped
    assert set(ht["area_fraction"]) == {f"head{k}" for k in range(grid.shape[1])}
    bad = compose_in(["task=attention", *model_overrides("dinov2_reg"), "task.method=rollout",
                      "task.head_threshold=0.6", "task.overwrite=true", *QUIET])
    with pytest.raises(ValueError, match="head_threshold.*cls_attention"):
        run_task(bad)


def test_reconstruct_official_mae(compose_in, tmp_path):
    cfg = compose_in(["task=reconstruct", *model_overrides("mae_visualize"), "task.max_images=2", *QUIET])
    run_task(cfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert "RANDOM" not in json.dumps(saved.get("provenance", {}))


def test_reconstruct_refuses_encoder_only_mae(compose_in, tmp_path):
    cfg = compose_in(["task=reconstruct", *model_overrides("mae_pretrain"), "task.max_images=2", *QUIET])
    with pytest.raises(CheckpointError, match="decoder"):
        run_task(cfg)
    model = build_model(compose_cfg(model_overrides("mae_pretrain")).model).eval()
    import torch

    with pytest.raises(CheckpointError, match="this checkpoint has no decoder"):
        model.reconstruct(torch.zeros(1, 3, model.img_size, model.img_size))


def test_wrong_family_checkpoint_is_refused_naming_both():
    over = model_overrides("dinov2_reg")
    over[1] = f"model.checkpoint={checkpoint_path('dinov3')}"
    with pytest.raises(CheckpointError) as err:
        build_model(compose_cfg(over).model)
    msg = str(err.value)
    assert "dinov3" in msg and "'dinov2'" in msg and "model=" in msg


def test_load_report_names_format_part_and_ignored():
    from tests.modern_helpers import build

    report = build("dino_ckpt").load_report
    assert report.layout == "dino_train" and "teacher backbone" in report.container
    ignored = dict(report.ignored)
    assert "student" in ignored and "optimizer" in ignored and "dino_loss" in ignored
    assert any("head" in k for k in ignored)  # the teacher's DINO head
    assert "teacher" in report.summary()
    report = build("ijepa").load_report
    assert "target encoder" in report.container and "predictor" in dict(report.ignored)
    assert "encoder" in dict(report.ignored)


def test_hf_folder_and_offline_hub_id(tmp_path, monkeypatch):
    cfg = compose_cfg(["model=hf", f"model.path={checkpoint_path('hf_dinov2_reg')}"])
    model = build_model(cfg.model)
    assert model.release == "dinov2" and model.num_register_tokens == 4
    assert model.load_report.layout == "hf_dinov2"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for over in (["model=hf", "model.path=facebook/dinov2-small"],
                 ["model=dinov2_vits14", "model.pretrained=true"]):
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError) as err:
            build_model(compose_cfg(over).model)
        assert time.perf_counter() - t0 <= 5.0
        msg = str(err.value)
        assert "HF_HUB_OFFLINE" in msg and "model.checkpoint=" in msg and "cache" in msg
