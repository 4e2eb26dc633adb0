"""Issue 10, failure output and item 9: a failing run says so in one line (exit 1 runtime, 2
config; the traceback only with HYDRA_FULL_ERROR=1) and in summary.json (status failed, what was
written); FeatureHealth measures the representation each algorithm is evaluated with."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from selfsup_vis.callbacks.feature_health import FeatureHealth, evaluated_representation
from selfsup_vis.data.base import CorruptImageError
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model, model_pipeline
from selfsup_vis.tasks.common import run_task
from tests.conftest import compose_cfg, run_main


def _folder_with_bad_image(root: Path) -> Path:
    """Two classes of good PNGs; the last file of the last class is not an image."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "zz_bad.png").write_bytes(b"not an image at all" * 10)
    return root


BROWSE = ["task=browse", "model=mocov2_tiny", "task.n_samples=5", "dataset=image_folder"]


def test_failed_browse_leaves_a_failed_summary_listing_partial_figures(tmp_path):
    data = _folder_with_bad_image(tmp_path / "data")
    out = tmp_path / "run"
    try:
        run_task(compose_cfg([*BROWSE, f"dataset.root={data}"], out))
        raise AssertionError("the bad image should fail the run")
    except CorruptImageError as err:
        assert "zz_bad.png" in str(err)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and s["error_type"] == "CorruptImageError" and "zz_bad.png" in s["error"]
    pngs = sorted(str(p.relative_to(out)) for p in (out / "browse").glob("*.png"))
    assert len(pngs) == 4 and all(p in s["written"] for p in pngs)  # the partial set is named
    assert "incomplete" in s["note"] and s["traceback"]


@pytest.mark.slow
def test_cli_runtime_error_is_one_line_exit_1_traceback_on_request(tmp_path):
    data = _folder_with_bad_image(tmp_path / "data")
    args = [*BROWSE, f"dataset.root={data}", "logger=none"]
    proc = run_main([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("Error (CorruptImageError): cannot read image") and "zz_bad.png" in first
    assert "Traceback" not in proc.stderr + proc.stdout
    log_file = next((tmp_path / "a").glob("*.log"))
    assert "Traceback" in log_file.read_text()  # kept in the run's log
    full = run_main([*args, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and full.stderr.startswith("Error (CorruptImageError)")
    assert "Traceback" in full.stderr


# ------------------------------------------------------------------------------ item 9: FeatureHealth
def test_feature_health_measures_the_evaluated_representation():
    mae = build_model(compose_cfg(["model=mae_tiny"]).model)
    moco = build_model(compose_cfg(["model=mocov2_tiny"]).model)
    assert evaluated_representation(mae, None) == ("norm.mean", "norm.mean (mean of the patch tokens)")
    assert evaluated_representation(moco, None) == ("layer4", "layer4 (pooled output)")
    assert evaluated_representation(mae, "norm.cls") == ("norm.cls", "norm.cls")


def _fit_with_health(model, cfg, tmp_path, steps: int) -> FeatureHealth:
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.configure(train=model_pipeline(cfg.model), eval=pipeline_for_model(cfg.model, "eval", crop_pct=None))
    health = FeatureHealth(every_n_steps=steps, every_n_epochs=None, num_samples=32)
    trainer = pl.Trainer(max_steps=steps, logger=False, callbacks=[health], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return health


@pytest.mark.slow
def test_tiny_mae_is_not_a_false_alarm_but_a_collapsed_one_warns(tmp_path, caplog):
    torch.manual_seed(0)
    cfg = compose_cfg(["model=mae_tiny", "dataset.batch_size=8", "dataset.val_samples_per_class=4"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="selfsup_vis"):
        health = _fit_with_health(build_model(cfg.model), cfg, tmp_path / "ok", steps=3)
    assert "FeatureHealth" not in caplog.text and health.history[-1][1]["effective_rank"] > 1.5

    collapsed = build_model(cfg.model)
    with torch.no_grad():  # every image maps to the norm's bias: all-constant features
        collapsed.encoder.norm.weight.zero_()
        collapsed.encoder.norm.bias.fill_(0.5)
    collapsed.encoder.norm.requires_grad_(False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selfsup_vis"):
        health = _fit_with_health(collapsed, cfg, tmp_path / "collapsed", steps=1)
    assert "FeatureHealth: features of norm.mean (mean of the patch tokens) look collapsed" in caplog.text
    assert health.history[-1][1]["feature_std"] < 1e-6
