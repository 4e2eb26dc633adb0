"""model=mmselfsup_r50: an MMSelfSup / mmpretrain SSL ResNet-50 checkpoint as a backbone, on the
verified MoCo v2 fixture (tiny widths; sizes from its JSON) and the real ResNet-50 manifest:
backbone outputs equal mmpretrain's, neck / momentum encoder / queue reported ignored."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup_vis.checkpoints.loading import LoadReport, convert_state_dict
from selfsup_vis.models import build_model
from selfsup_vis.models.mmselfsup_r50 import mmselfsup_backbone
from tests.conftest import SHARED, compose_cfg

MM = SHARED / "fixtures" / "mmpretrain"
needs_mm = pytest.mark.skipif(not (MM / "mocov2.pth").is_file(), reason=f"no mmpretrain fixtures at {MM}")


@needs_mm
@torch.no_grad()
def test_mocov2_checkpoint_as_backbone_matches_mmpretrain():
    desc = json.loads((MM / "mocov2.json").read_text())["config"]["backbone"]
    cfg = compose_cfg(["model=mmselfsup_r50", f"model.checkpoint={MM / 'mocov2.pth'}",
                       f"model.stem_channels={desc['stem_channels']}", f"model.base_channels={desc['base_channels']}",
                       f"model.depth={desc['depth']}"])
    model = build_model(cfg.model).eval()
    io = torch.load(MM / "mocov2_io.pt", weights_only=True)
    feats = model._layer_outputs(io["inputs"]["input"], {"layer1", "layer2", "layer3", "layer4"})
    for i in range(4):
        err = (feats[f"layer{i + 1}"] - io["outputs"][f"backbone_out{i}"]).abs().max().item()
        assert err <= 1e-4, (i, err)
    gap = model.extract_features(io["inputs"]["input"], ["layer4"])["layer4"]
    assert (gap - io["outputs"]["gap_out3"]).abs().max().item() <= 1e-4
    ignored = {k.split(".")[0] for k, _ in model.load_report.ignored}
    assert {"neck", "encoder_k", "queue", "queue_ptr"} <= ignored
    assert not model.load_report.missing and not model.load_report.unexpected


@needs_mm
def test_real_mmselfsup_resnet50_manifest_maps():
    man = json.loads((MM / "manifests" / "mocov2_resnet50.json").read_text())["state_dict"]
    model = build_model(compose_cfg(["model=mmselfsup_r50"]).model, load=False, device="meta")
    report = LoadReport(source="mocov2_resnet50")
    convert_state_dict({k: torch.empty(v, device="meta") for k, v in man.items()}, mmselfsup_backbone(),
                       model, report)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert len(report.converted) == sum(k.startswith("backbone.") for k in man)
