"""Every released architecture's key/shape manifest converts into the matching ``model=``
config with zero missing and zero unexpected keys (meta tensors: no weights allocated)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from selfsup_vis.config import compose
from selfsup_vis.models import build_model
from selfsup_vis.models.mmconfig import model_config_from_mm

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SELFSUP_VIS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mmpretrain"))
MANIFESTS = sorted(p for p in (FIXTURES / "manifests").glob("*.json") if not p.name.startswith("_")) \
    if (FIXTURES / "manifests").is_dir() else []

VIT_L = ["model.arch.embed_dim=1024", "model.arch.depth=24", "model.arch.num_heads=16"]
VIT_H = ["model.arch.patch_size=14", "model.arch.embed_dim=1280", "model.arch.depth=32",
         "model.arch.num_heads=16"]
SWIN_L = ["model.arch.embed_dim=192", "model.arch.num_heads=[6,12,24,48]"]
# manifest name -> the model= config (and overrides) a user would pick for that checkpoint
CONFIG_FOR = {
    "mae_vit-base-p16": ["model=mae_vit-b16"],
    "mae_vit-large-p16": ["model=mae_vit-l16"],
    "mae_vit-huge-p14": ["model=mae_vit-h14"],
    "maskfeat_vit-base-p16": ["model=maskfeat_vit-b16"],
    "mocov2_resnet50": ["model=mocov2"],
    "simmim_swin-base-w6_192px": ["model=simmim_swin-b"],
    "simmim_swin-large-w12_192px": ["model=simmim_swin-l"],
    "cls_resnet50": ["model=mmcls"],
    "cls_resnet50_mocov2-linear": ["model=mmcls"],
    "cls_swin-base-w6_192px_simmim-finetune": ["model=mmcls_swin-b_simmim-ft"],
    "cls_swin-base-w7_224px_simmim-finetune": ["model=mmcls_swin-b_simmim-ft", "model.img_size=224",
                                               "model.arch.window_size=7"],
    "cls_swin-large-w14_224px_simmim-finetune": ["model=mmcls_swin-b_simmim-ft", "model.img_size=224",
                                                 "model.arch.window_size=14",
                                                 "model.arch.pad_small_map=true", *SWIN_L],
    "cls_vit-base-p16": ["model=mmcls_vit-b16", "model.hidden_dim=3072"],
    "cls_vit-base-p16_384px": ["model=mmcls_vit-b16", "model.img_size=384"],
    "cls_vit-base-p16_mae-in1k": ["model=mmcls_vit-b16"],
    "cls_vit-base-p16_mae-linear": ["model=mmcls_vit-b16", "model.neck=cls_bn"],
    "cls_vit-base-p16_mae-finetune": ["model=mmcls_vit-b16_mae-ft"],
    "cls_vit-base-p16_maskfeat-finetune": ["model=mmcls_vit-b16_mae-ft"],
    "cls_vit-large-p16_mae-finetune": ["model=mmcls_vit-b16_mae-ft", *VIT_L],
    "cls_vit-huge-p14_mae-finetune": ["model=mmcls_vit-b16_mae-ft", *VIT_H],
}
pytestmark = pytest.mark.skipif(not MANIFESTS, reason=f"no manifests under {FIXTURES}")


def _meta_checkpoint(manifest: dict) -> dict:
    nonfloat = manifest.get("non_float_keys", {})
    sd = {k: torch.empty(shape, device="meta", dtype=getattr(torch, nonfloat.get(k, "float32")))
          for k, shape in manifest["state_dict"].items()}
    return {"meta": {"source": manifest.get("source_config")}, "state_dict": sd}


def _check(model, manifest: dict) -> None:
    report = model.load_weights(_meta_checkpoint(manifest), strict=False)
    assert not report.missing, f"missing: {report.missing[:10]}"
    assert not report.unexpected, f"unexpected: {report.unexpected[:10]}"
    assert not report.mismatched, f"mis-shaped: {report.mismatched[:10]}"
    assert not report.resized, f"resized: {report.resized[:10]}"
    assert len(report.converted) + len(report.verified) + len(report.ignored) == len(manifest["state_dict"])


def test_every_manifest_has_a_config() -> None:
    names = {p.stem for p in MANIFESTS}
    assert names <= set(CONFIG_FOR), f"manifests without a model= config: {sorted(names - set(CONFIG_FOR))}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_manifest_loads_into_model_config(path: Path) -> None:
    manifest = json.loads(path.read_text())
    cfg = compose(CONFIG_FOR[path.stem])
    _check(build_model(cfg.model, load=False, device="meta"), manifest)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_manifest_loads_into_model_from_its_mm_config(path: Path) -> None:
    manifest = json.loads(path.read_text())
    cfg = model_config_from_mm(manifest["model_cfg"], name=path.stem)
    _check(build_model(cfg, load=False, device="meta"), manifest)
