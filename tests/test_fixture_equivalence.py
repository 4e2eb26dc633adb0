"""Fidelity against the mmpretrain 1.2 reference fixtures: every stored output reproduced
(<= 1e-4 for floats, exactly for integers) from each fixture's own JSON description."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup_vis.checkpoints.export import to_mmpretrain
from selfsup_vis.models import build_model
from selfsup_vis.models.mmconfig import model_config_from_mm

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SELFSUP_VIS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mmpretrain"))
TOL = 1e-4


def _fixtures() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    out = []
    for p in sorted(FIXTURES.glob("*.json")):
        try:
            if "kind" in json.loads(p.read_text()):
                out.append(p)
        except (json.JSONDecodeError, OSError):
            continue
    return out


FIXTURE_FILES = _fixtures()
pytestmark = pytest.mark.skipif(not FIXTURE_FILES, reason=f"no fixtures in {FIXTURES}")


def _load(desc_path: Path) -> tuple[dict, dict, torch.nn.Module]:
    desc = json.loads(desc_path.read_text())
    files = desc.get("files", {})
    io = torch.load(FIXTURES / files.get("io", f"{desc['name']}_io.pt"), map_location="cpu",
                    weights_only=True)
    cfg = model_config_from_mm(desc["config"], name=desc["name"])
    cfg["checkpoint"] = str(FIXTURES / files.get("checkpoint", f"{desc['name']}.pth"))
    model = build_model(cfg).eval()
    return desc, io, model


def _mae(desc: dict, io: dict, m) -> dict[str, torch.Tensor]:
    x, ref = io["inputs"]["input"], io["outputs"]
    seed = desc["fixture_params"]["mask_seed"]
    torch.manual_seed(seed)
    noise = torch.rand(x.shape[0], m.grid**2)
    out = m(x, noise=noise)  # the same single RNG call as MAEViT.random_masking
    raw = m.forward_features(x)
    feats = m.extract_features(x, ["norm.cls", "norm.mean"])
    B, L, C = raw.shape[0], raw.shape[1] - 1, raw.shape[2]
    side = int(round(L**0.5))
    res = {k: out[k] for k in ("noise", "ids_shuffle", "ids_keep", "mask", "ids_restore", "latent",
                              "pred", "target", "loss")}
    res.update(feat_nomask_raw=raw, feat_nomask_cls=feats["norm.cls"],
               feat_nomask_patch_mean=feats["norm.mean"],
               feat_nomask_featmap=raw[:, 1:].reshape(B, side, side, C).permute(0, 3, 1, 2))
    # feeding the stored noise must give the same result as re-seeding
    assert torch.equal(m(x, noise=ref["noise"])["ids_restore"], ref["ids_restore"])
    return res


def _maskfeat(desc: dict, io: dict, m) -> dict[str, torch.Tensor]:
    x, mask = io["inputs"]["input"], io["inputs"]["mask"]
    out = m(x, mask)
    res = {"latent": out["latent"], "pred": out["pred"], "loss": out["loss"], "hog": out["target"],
           "hog_cells": m.hog.cells(x), "feat_nomask": m.forward_features(x)}
    if "synthetic_square" in io["inputs"]:
        sq = io["inputs"]["synthetic_square"]
        res.update(synthetic_hog=m.hog(sq), synthetic_hog_cells=m.hog.cells(sq))
    return res


def _simmim(desc: dict, io: dict, m) -> dict[str, torch.Tensor]:
    x, mask = io["inputs"]["input"], io["inputs"]["mask"]
    out = m(x, mask)
    return {"feat_masked": out["feat"], "rec": out["rec"], "loss": out["loss"],
            "feat_nomask": m.forward_features(x)}


def _mocov2(desc: dict, io: dict, m) -> dict[str, torch.Tensor]:
    x = io["inputs"]["input"]
    out = m(x)
    res = {f"backbone_out{i}": out["stages"][f"layer{i + 1}"] for i in range(4)}
    feats = m.extract_features(x, ["layer4", "neck"])
    res.update(gap_out3=feats["layer4"], neck_out=out["neck"], q=out["q"],
               key_backbone_out3=out["key_backbone"], key_neck_out=out["key_neck"], k=out["k"],
               l_pos=out["l_pos"], l_neg=out["l_neg"], logits=out["logits"], loss=out["loss"])
    assert torch.allclose(feats["neck"], out["neck"], atol=1e-6)
    return res


def _cls(desc: dict, io: dict, m) -> dict[str, torch.Tensor]:
    x = io["inputs"]["input"]
    f = m.extract_features(x, ["feats", "pre_logits", "logits"])
    logits = m(x)
    return {"feats": f["feats"], "pre_logits": f["pre_logits"], "logits": logits,
            "pred_score": F.softmax(logits, dim=1), "pred_label": logits.argmax(dim=1)}


COMPUTE = {"mae": _mae, "maskfeat": _maskfeat, "simmim": _simmim, "mocov2": _mocov2, "cls": _cls}


@pytest.mark.parametrize("desc_path", FIXTURE_FILES, ids=lambda p: f"fixture-{p.stem}")
def test_fixture_outputs_match_reference(desc_path: Path) -> None:
    desc, io, model = _load(desc_path)
    report = model.load_report
    assert report is not None and not report.unexpected and not report.mismatched, report.summary()
    assert not report.missing, report.summary()
    with torch.no_grad():
        ours = COMPUTE[desc["kind"]](desc, io, model)
    not_covered = set(io["outputs"]) - set(ours)
    assert not not_covered, f"stored outputs without a check: {sorted(not_covered)}"
    diffs = {}
    for key, ref in io["outputs"].items():
        got = ours[key]
        assert tuple(got.shape) == tuple(ref.shape), f"{key}: {tuple(got.shape)} vs {tuple(ref.shape)}"
        if ref.is_floating_point():
            diffs[key] = (got.float() - ref.float()).abs().max().item() if ref.numel() else 0.0
        else:
            assert torch.equal(got.to(ref.dtype), ref), f"{key}: integer output differs"
            diffs[key] = 0.0
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, f"{desc['name']}: max abs diff above {TOL}: {bad}"
    print(f"{desc['name']}: max abs diff {max(diffs.values()):.3g}", diffs)


@pytest.mark.parametrize("desc_path", FIXTURE_FILES, ids=lambda p: f"fixture-{p.stem}")
def test_fixture_export_roundtrip(desc_path: Path) -> None:
    """fixture.pth -> ours -> mmpretrain layout gives back the original keys and tensors."""
    desc, _, model = _load(desc_path)
    original = torch.load(FIXTURES / f"{desc['name']}.pth", map_location="cpu", weights_only=True)
    orig_sd = original["state_dict"]
    exported = to_mmpretrain(model)["state_dict"]
    assert set(exported) == set(orig_sd), (
        f"only in original: {sorted(set(orig_sd) - set(exported))[:8]}; "
        f"only in export: {sorted(set(exported) - set(orig_sd))[:8]}")
    for k, v in orig_sd.items():
        assert exported[k].dtype == v.dtype and torch.equal(exported[k], v), k
