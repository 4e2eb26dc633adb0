"""Every manifest of a real released checkpoint (names and shapes, no weights) maps onto the
model its config preset builds with 0 missing, 0 unexpected and 0 mis-shaped keys; the presets
compose; the report names the format, the part used and what was ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfsup_vis.checkpoints.formats import detect, select
from selfsup_vis.checkpoints.formats.mae_official import official_mae_full
from selfsup_vis.checkpoints.loading import LoadReport, convert_state_dict
from selfsup_vis.models import build_model
from selfsup_vis.models.pretrained_vit import PretrainedViT
from tests.conftest import compose_cfg
from tests.modern_helpers import FIXTURES, needs_modern

pytestmark = needs_modern
MANIFESTS = FIXTURES / "manifests"

#: manifest -> config preset (model=...)
PRESET = {
    "dino_vit_small16_hub": "dino_vits16", "dino_vit_small8_hub": "dino_vits8",
    "dino_vit_base16_hub": "dino_vitb16", "dino_vit_base8_hub": "dino_vitb8",
    "dino_vit_small16_trainckpt": "dino_vits16", "dino_vit_base16_trainckpt": "dino_vitb16",
    **{f"dinov2_vit{s}14{r}": f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")},
    **{f"dinov3_vit{s}": f"dinov3_vit{s}" for s in ("s16", "s16plus", "b16", "l16", "h16plus", "7b16")},
    "dinov3_vitl16_sat493m": "dinov3_vitl16",
    "mocov3_vit_small": "mocov3_vit-s", "mocov3_vit_base": "mocov3_vit-b",
    "ijepa_vith14_224": "ijepa_vit-h14", "ijepa_vith16_448": "ijepa_vit-h16-448", "ijepa_vitg16_224": "ijepa_vit-g16",
    "mae_vit_base_patch16_full": "mae_official_vit-b16", "mae_vit_large_patch16_full": "mae_official_vit-l16",
    "mae_vit_huge_patch14_full": "mae_official_vit-h14",
}
HF_TYPES = {"hf_dinov2-with-registers": "dinov2_with_registers", "hf_dinov2": "dinov2",
            "hf_dinov3": "dinov3_vit", "hf_vit-mae": "vit_mae"}


def _names() -> list[str]:
    return sorted(p.stem for p in MANIFESTS.glob("*.json") if not p.stem.startswith("_")) \
        if MANIFESTS.is_dir() else []


def _meta_tensors(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _container(man: dict) -> dict:
    if man.get("sections"):
        obj = {k: _meta_tensors(v) for k, v in man["sections"].items()}
        for extra in ("optimizer", "opt", "epoch", "args", "scaler"):
            if extra in man["container"]:
                obj[extra] = {"state": {}} if extra in ("optimizer", "opt") else 1
        return obj
    sd = _meta_tensors(man["state_dict"])
    if man["container"].startswith("{'model'"):
        return {"model": sd}
    if "'state_dict'" in man["container"]:
        return {"epoch": 300, "arch": "vit", "state_dict": sd, "optimizer": {"state": {}}}
    return sd


def _model_for(name: str, man: dict, tmp: Path):
    if name.startswith("mae_vit") and name.endswith("_encoder"):
        size = name.split("_")[2]
        preset = {"base": "mae_official_vit-b16", "large": "mae_official_vit-l16",
                  "huge": "mae_official_vit-h14"}[size]
        cfg = compose_cfg([f"model={preset}"]).model
        return _mae_encoder_vit(cfg)
    if name.startswith("hf_"):
        mtype = next(t for k, t in HF_TYPES.items() if name.startswith(k))
        folder = tmp / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": mtype, **man["config"]}))
        (folder / "model.safetensors").write_bytes(b"")
        with torch.device("meta"):
            return PretrainedViT(path=str(folder), name=name)
    cfg = compose_cfg([f"model={PRESET[name]}"])
    return build_model(cfg.model, load=False, device="meta")


def _mae_encoder_vit(cfg) -> PretrainedViT:
    with torch.device("meta"):
        return PretrainedViT(release="mae", img_size=cfg.img_size, patch_size=cfg.patch_size,
                             embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, name=cfg.name)


@pytest.mark.parametrize("name", _names())
def test_manifest_maps_completely(name: str, tmp_path: Path) -> None:
    man = json.loads((MANIFESTS / f"{name}.json").read_text())
    model = _model_for(name, man, tmp_path)
    obj = _container(man)
    report = LoadReport(source=name)
    if isinstance(model, PretrainedViT):
        if name.startswith("hf_"):
            obj = {"__hf_config__": {"model_type": next(t for k, t in HF_TYPES.items() if name.startswith(k))},
                   **_meta_tensors(man["state_dict"])}
        fmt, sec = detect(obj)
        assert fmt.family == model.release, (fmt.name, model.release)
        state, ignored = select(obj, fmt, sec)
        notes: list = []
        if fmt.prepare is not None:
            state = fmt.prepare(state, model, notes)
        convert_state_dict(state, fmt.keymap(), model, report)
    else:  # the official MAE with decoder into models/mae.py
        convert_state_dict(obj["model"], official_mae_full(), model, report)
    assert not report.missing, f"{name}: missing {report.missing[:8]}"
    assert not report.unexpected, f"{name}: unexpected {report.unexpected[:8]}"
    assert not report.mismatched, f"{name}: mis-shaped {report.mismatched[:8]}"
    assert report.converted


def test_every_new_preset_composes() -> None:
    presets = sorted(set(PRESET.values()) | {"mae_official_vit-h14", "mmselfsup_r50"})
    for preset in presets:
        cfg = compose_cfg([f"model={preset}"])
        assert cfg.model.name == preset
