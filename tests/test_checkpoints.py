"""Checkpoint conversion, refusal of bad files, caching, export round trips (tiny models)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from selfsup_vis.checkpoints import (
    CheckpointError,
    export_checkpoint,
    resolve_checkpoint,
    rules,
    save_checkpoint,
)
from selfsup_vis.checkpoints.loading import export_state_dict
from selfsup_vis.config.model import MMClassifierConfig
from selfsup_vis.models import build_model
from selfsup_vis.models.mmconfig import model_config_from_mm
from selfsup_vis.utils.download import url_cache_path

TINY = {
    "mae": {"_target_": "selfsup_vis.models.mae.MAE", "img_size": 32, "patch_size": 8, "embed_dim": 32,
            "depth": 2, "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1,
            "decoder_num_heads": 2},
    "maskfeat": {"_target_": "selfsup_vis.models.maskfeat.MaskFeat", "img_size": 32, "patch_size": 8,
                 "embed_dim": 32, "depth": 2, "num_heads": 2},
    "simmim": {"_target_": "selfsup_vis.models.simmim.SimMIM", "img_size": 64, "embed_dim": 8,
               "depths": [1, 2, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 2},
    "mocov2": {"_target_": "selfsup_vis.models.moco.MoCoV2", "img_size": 32, "stem_channels": 8,
               "base_channels": 4, "layers": [1, 1, 1, 1], "neck_hidden": 16, "feat_dim": 8,
               "queue_len": 16},
    "cls_vit": {"_target_": "selfsup_vis.models.classifier.MMClassifier", "backbone": "vit",
                "img_size": 32, "arch": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                "neck": "none", "head": "vit", "hidden_dim": 24, "num_classes": 10},
    "cls_swin": {"_target_": "selfsup_vis.models.classifier.MMClassifier", "backbone": "swin",
                 "img_size": 64, "arch": {"embed_dim": 8, "depths": [1, 1, 1, 1],
                                          "num_heads": [1, 1, 2, 2], "window_size": 2},
                 "neck": "gap", "head": "linear", "num_classes": 10},
    "cls_resnet": {"_target_": "selfsup_vis.models.classifier.MMClassifier", "backbone": "resnet",
                   "img_size": 32, "arch": {"depth": 18, "stem_channels": 8, "base_channels": 8},
                   "neck": "gap", "head": "linear", "num_classes": 10},
}


def _tiny(kind: str, **over):
    torch.manual_seed(0)
    return build_model({**TINY[kind], **over}).eval()


def _randomize(model: torch.nn.Module) -> None:
    """Make every float tensor distinct so a wrong mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_roundtrip_ours_mm_ours(kind: str, tmp_path: Path) -> None:
    a = _tiny(kind)
    _randomize(a)
    path = save_checkpoint(export_checkpoint(a, "mmpretrain"), tmp_path / "mm.pth")
    b = _tiny(kind)
    report = b.load_weights(str(path))
    assert not (report.missing or report.unexpected or report.mismatched), report.summary()
    assert report.layout.startswith("mmpretrain")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["mae", "maskfeat", "simmim", "mocov2"])
def test_timm_backbone_export_loads_into_timm_and_back(kind: str, tmp_path: Path) -> None:
    a = _tiny(kind)
    _randomize(a)
    sd = export_checkpoint(a, "timm")
    path = save_checkpoint(sd, tmp_path / "timm.pth")
    b = _tiny(kind)
    report = b.load_weights(str(path))  # missing decoder / neck: warnings, not errors
    assert not report.unexpected and not report.mismatched
    backbone = "encoder" if hasattr(a, "encoder") else "backbone"
    for k, v in getattr(a, backbone).state_dict().items():
        assert torch.equal(getattr(b, backbone).state_dict()[k], v), k


def test_official_mae_layout(tmp_path: Path) -> None:
    a = _tiny("mae")
    _randomize(a)
    official = export_state_dict(a, rules.official_mae())
    assert "decoder_norm.weight" in official and "blocks.0.mlp.fc1.weight" in official
    save_checkpoint({"model": official}, tmp_path / "mae_official.pth")
    b = _tiny("mae")
    rep = b.load_weights(str(tmp_path / "mae_official.pth"))
    assert rep.layout == "official MAE / timm ViT" and not rep.missing
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    assert torch.equal(a(x, noise=noise)["pred"], b(x, noise=noise)["pred"])


def test_official_moco_layout(tmp_path: Path) -> None:
    a = _tiny("mocov2")
    _randomize(a)
    official = export_state_dict(a, rules.official_moco())
    assert "module.encoder_q.fc.0.weight" in official and "module.queue" in official
    save_checkpoint({"epoch": 200, "arch": "resnet50", "state_dict": official}, tmp_path / "moco.pth.tar")
    b = _tiny("mocov2")
    rep = b.load_weights(str(tmp_path / "moco.pth.tar"))
    assert rep.layout == "official MoCo v2"
    assert rep.missing == ["momentum_steps"]
    assert torch.equal(a.neck.mlp[2].weight, b.neck.mlp[2].weight)


def test_renamed_key_is_refused(tmp_path: Path) -> None:
    obj = export_checkpoint(_tiny("mae"), "mmpretrain")
    sd = obj["state_dict"]
    sd["backbone.layers.1.attn.qkv_renamed.weight"] = sd.pop("backbone.layers.1.attn.qkv.weight")
    save_checkpoint(obj, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError) as e:
        _tiny("mae").load_weights(str(tmp_path / "renamed.pth"))
    msg = str(e.value)
    assert "backbone.layers.1.attn.qkv_renamed.weight" in msg and "encoder.blocks.1.attn.qkv.weight" in msg
    assert "renamed.pth" in msg


def test_misshaped_tensor_is_refused(tmp_path: Path) -> None:
    obj = export_checkpoint(_tiny("simmim"), "mmpretrain")
    key = "backbone.stages.1.blocks.0.ffn.layers.0.0.weight"
    obj["state_dict"][key] = torch.zeros(5, 16)
    save_checkpoint(obj, tmp_path / "bad_shape.pth")
    with pytest.raises(CheckpointError) as e:
        _tiny("simmim").load_weights(str(tmp_path / "bad_shape.pth"))
    assert key in str(e.value) and "[5, 16]" in str(e.value)


def test_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"meta": {"x": Payload()}, "state_dict": {"a": torch.zeros(1)}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as e:
        _tiny("mae").load_weights(str(tmp_path / "evil.pth"))
    assert "never executes pickled code" in str(e.value) and "evil.pth" in str(e.value)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        _tiny("mae").load_weights(str(tmp_path / "junk.pth"))
    with pytest.raises(CheckpointError, match="not found"):
        _tiny("mae").load_weights(str(tmp_path / "absent.pth"))


def test_pos_embed_and_rel_table_resized_with_warning(tmp_path: Path) -> None:
    save_checkpoint(export_checkpoint(_tiny("mae"), "mmpretrain"), tmp_path / "mae.pth")
    big = _tiny("mae", img_size=48)
    rep = big.load_weights(str(tmp_path / "mae.pth"))
    assert {k for k, _, _ in rep.resized} == {"backbone.pos_embed", "neck.decoder_pos_embed"}
    assert any("resized" in w for w in rep.warnings)
    save_checkpoint(export_checkpoint(_tiny("simmim"), "mmpretrain"), tmp_path / "sm.pth")
    rep = _tiny("simmim", window_size=4, img_size=128).load_weights(str(tmp_path / "sm.pth"))
    assert rep.resized and all("relative_position_bias_table" in k for k, _, _ in rep.resized)


def test_url_cache_and_offline_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFSUP_VIS_CACHE", str(tmp_path / "cache"))
    url = "http://127.0.0.1:9/models/mae_tiny.pth"
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint(url, timeout=2)
    cached = url_cache_path(url, tmp_path / "cache" / "checkpoints")  # keyed by the full URL
    assert cached.name == "mae_tiny.pth" and str(cached) in str(e.value)
    assert not list(cached.parent.glob("*.part"))  # nothing half-written
    save_checkpoint(export_checkpoint(_tiny("mae"), "mmpretrain"), cached)
    assert resolve_checkpoint(url) == cached
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_checkpoint(url, sha256="0" * 64)
    assert _tiny("mae").load_weights(url).converted


def test_mm_config_translation_matches_schema() -> None:
    cfg = model_config_from_mm({"type": "ImageClassifier", "backbone": {"type": "ResNet", "depth": 50},
                                "neck": {"type": "GlobalAveragePooling"},
                                "head": {"type": "LinearClsHead", "num_classes": 1000}})
    fields = set(MMClassifierConfig.__dataclass_fields__)
    assert set(cfg) <= fields
    with pytest.raises(ValueError, match="unsupported"):
        model_config_from_mm({"type": "BYOL"})


def test_lightning_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    a = _tiny("mae")
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    data = [{"image": torch.randn(2, 3, 32, 32)}]
    trainer.fit(a, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    trainer.save_checkpoint(tmp_path / "ours.ckpt")
    b = _tiny("mae")
    rep = b.load_weights(str(tmp_path / "ours.ckpt"))
    assert rep.container == "Lightning checkpoint" and not rep.missing and not rep.unexpected
    assert torch.equal(a.encoder.blocks[0].attn.qkv.weight, b.encoder.blocks[0].attn.qkv.weight)
    assert os.path.getsize(tmp_path / "ours.ckpt") > 0
