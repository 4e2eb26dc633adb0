"""Issue 10, items 1-2: no figure or number from random weights without saying so.

Random-init models say RANDOM in summary.json, on every figure (a text artist of the Figure and
the saved PNG's metadata) and in the loggers' config; a checkpoint lacking a part the task uses
(a MoCo neck, an MAE decoder) is refused naming the prefix, unless model.allow_random_parts=true,
which flags it instead."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from selfsup_vis.checkpoints.provenance import (
    Provenance,
    RandomPartsError,
    describe_weights,
    layer_parts,
    random_parts,
)
from selfsup_vis.models import build_model
from selfsup_vis.plotting.log import new_figure, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.tasks.common import run_task
from tests.conftest import compose_cfg

TSNE = ["task=tsne", "task.max_num_class=2", "task.max_samples_per_class=8", "task.backend=pca",
        "task.cache=false", "task.projector=false", "dataset.val_samples_per_class=8",
        "trainer.enable_progress_bar=false"]
RECON = ["task=reconstruct", "task.max_images=2"]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _png_provenance(path: Path) -> str:
    return Image.open(path).text.get("Description", "")


def _crafted_checkpoint(tmp_path: Path, model_name: str, drop: str) -> Path:
    """Our own state dict of a tiny model with every tensor under ``drop`` removed."""
    model = build_model(compose_cfg([f"model={model_name}"]).model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}
    path = tmp_path / f"{model_name}_without_{drop.rstrip('.')}.pth"
    torch.save(state, path)
    return path


# ------------------------------------------------------------------------------ the record
def test_random_parts_are_the_largest_fully_missing_prefixes():
    keys = ["backbone.conv.weight", "neck.mlp.0.weight", "neck.mlp.0.bias", "neck.mlp.2.weight",
            "model.fc.weight", "model.fc.bias", "model.conv1.weight", "mask_token"]
    assert random_parts(["neck.mlp.0.weight", "neck.mlp.0.bias", "neck.mlp.2.weight"], keys) == ["neck."]
    assert random_parts(["model.fc.weight", "model.fc.bias"], keys) == ["model.fc."]
    assert random_parts(["neck.mlp.0.bias", "mask_token"], keys) == ["mask_token", "neck.mlp.0.bias"]
    assert random_parts([], keys) == []


def test_footer_and_figure_say_random_weights(tmp_path):
    prov = Provenance(task="tsne", model="mocov2", weights="random", random=True, init_seed=3,
                      layer="neck", seed=0, dataset="synthetic", split="val", n=40)
    fig = new_figure(4, 3)
    fig.add_subplot().plot([0, 1])
    footer = add_provenance(fig, prov)
    texts = [t.get_text() for t in fig.texts]
    assert footer.startswith("RANDOM WEIGHTS") and any("RANDOM WEIGHTS" in t for t in texts)
    assert "init seed 3" in footer and "layer neck" in footer and "synthetic/val n=40" in footer
    png, pdf = save_figure(fig, tmp_path / "f", ["png", "pdf"])
    assert _png_provenance(png) == footer
    assert json.loads(Image.open(png).text["Provenance"])["random"] is True
    assert json.loads(json.dumps(prov.to_dict()))["flag"] == "RANDOM WEIGHTS"  # JSON-serialisable

    ckpt = prov.replace(random=False, weights="checkpoint /x/moco.pth sha256 0123456789abcdef",
                        checkpoint="/x/moco.pth", checkpoint_sha256="0123456789abcdef")
    assert "RANDOM" not in ckpt.footer() and "checkpoint moco.pth sha256 0123456789" in ckpt.footer()
    assert ckpt.replace(random_parts=["neck."]).flag == "RANDOM PARTS: neck."


def test_timm_pretrained_is_described_by_its_tag():
    cfg = compose_cfg(["model=classifier_tiny"]).model
    model = build_model(cfg)
    assert describe_weights({**cfg, "pretrained": True}, model)["weights"].startswith("timm pretrained resnet18")
    assert describe_weights(cfg, model) == {"weights": "random", "random": True}


def test_layer_parts_name_the_modules_outside_the_encoder():
    moco = build_model(compose_cfg(["model=mocov2_tiny"]).model)
    assert layer_parts(moco, ["layer4"]) == ["backbone."]
    assert layer_parts(moco, ["layer2", "neck"]) == ["backbone.", "neck."]


# ------------------------------------------------------------------------------ item 1: random weights
@pytest.mark.parametrize("overrides", [[*TSNE, "model=mocov2_tiny", "task.layers=[layer4,neck]"],
                                       [*RECON, "model=mae_tiny"]], ids=["tsne", "reconstruct"])
def test_random_init_says_random_in_summary_figures_and_logger(overrides, tmp_path, caplog):
    """Property: for a random-init model every figure and summary.json say RANDOM."""
    out = tmp_path / "run"
    run_task(compose_cfg([*overrides, "logger=csv"], out))
    s = _summary(out)
    assert s["weights"] == "random" and s["provenance"]["random"] is True and s["status"] == "success"
    assert s["provenance"]["init_seed"] == 0
    pngs = [p for p in out.rglob("*.png") if "csv" not in p.parts]
    assert len(pngs) >= 2
    for png in pngs:
        assert _png_provenance(png).startswith("RANDOM WEIGHTS"), png
    assert "RANDOM WEIGHTS" in caplog.text  # the loud warning
    hparams = next(out.glob("csv/**/hparams.yaml")).read_text()
    assert "provenance.weights: RANDOM WEIGHTS" in hparams and "provenance.random: true" in hparams


def test_checkpoint_weights_name_file_and_hash(tmp_path):
    ckpt = _crafted_checkpoint(tmp_path, "mocov2_tiny", "no_such_prefix.")
    out = tmp_path / "run"
    run_task(compose_cfg([*TSNE, "model=mocov2_tiny", f"model.checkpoint={ckpt}"], out))
    s = _summary(out)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert s["weights"] == f"checkpoint {ckpt} sha256 {digest[:10]}"
    assert s["provenance"]["checkpoint_sha256"] == digest and not s["provenance"]["random"]
    footer = _png_provenance(out / "tsne_layer4.png")
    assert "RANDOM" not in footer and f"checkpoint {ckpt.name} sha256 {digest[:10]}" in footer


# ------------------------------------------------------------------------------ item 2: random parts
@pytest.mark.slow
def test_checkpoint_without_neck_refused_for_neck_layer(tmp_path):
    ckpt = _crafted_checkpoint(tmp_path, "mocov2_tiny", "neck.")
    out = tmp_path / "refused"
    with pytest.raises(RandomPartsError, match=r"no weights for neck\. \(4 tensors\).*task\.layers=\['neck'\]"
                                               r".*model\.allow_random_parts=true"):
        run_task(compose_cfg([*TSNE, "model=mocov2_tiny", f"model.checkpoint={ckpt}", "task.layers=[neck]"], out))
    assert not (out / "feature_cache").exists() and not list(out.glob("*.png"))  # refused before work
    assert _summary(out)["status"] == "failed" and "neck." in _summary(out)["error"]

    # the backbone layers do not use the neck: no error, no flag
    ok = tmp_path / "backbone"
    run_task(compose_cfg([*TSNE, "model=mocov2_tiny", f"model.checkpoint={ckpt}", "task.layers=[layer4]"], ok))
    assert _summary(ok)["provenance"]["random_parts"] == []

    # opting in: runs, flagged in the summary and on every figure
    flagged = tmp_path / "allowed"
    run_task(compose_cfg([*TSNE, "model=mocov2_tiny", f"model.checkpoint={ckpt}", "task.layers=[neck]",
                          "model.allow_random_parts=true"], flagged))
    s = _summary(flagged)
    assert s["provenance"]["random_parts"] == ["neck."] and s["provenance"]["flag"] == "RANDOM PARTS: neck."
    assert _png_provenance(flagged / "tsne_neck.png").startswith("RANDOM PARTS: neck.")


@pytest.mark.slow
def test_mae_checkpoint_without_decoder_refused_for_reconstruct(tmp_path):
    ckpt = _crafted_checkpoint(tmp_path, "mae_tiny", "decoder.")
    with pytest.raises(RandomPartsError, match=r"no weights for decoder\. .*task=reconstruct"):
        run_task(compose_cfg([*RECON, "model=mae_tiny", f"model.checkpoint={ckpt}"], tmp_path / "a"))
    assert not list((tmp_path / "a").rglob("*.png"))
    out = tmp_path / "b"
    run_task(compose_cfg([*RECON, "model=mae_tiny", f"model.checkpoint={ckpt}", "model.allow_random_parts=true"], out))
    s = _summary(out)
    assert s["provenance"]["random_parts"] == ["decoder."] and s["weights"].startswith(f"checkpoint {ckpt}")
    assert all(_png_provenance(p).startswith("RANDOM PARTS: decoder.") for p in out.rglob("*.png")
               if "csv" not in p.parts)
