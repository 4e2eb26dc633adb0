"""Outputs belong to one run (issue 24 item 2, "Why" 6): a rerun into the directory of a finished
run is refused before anything is written there, naming the directory and both ways out; with
``task.overwrite=true`` the previous run's files (its manifest's) are removed first, so the old
layer's figures and arrays are gone and report.html lists exactly this run's files, the same
ones summary.json lists. An unfinished run in the directory is resumed, never refused."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from tests.conftest import assert_ok, run_main

TSNE = ["task=tsne", "model=mocov2_tiny", "task.backend=pca", "task.projector=false", "task.max_num_class=2",
        "task.max_samples_per_class=6", "dataset.val_samples_per_class=6", "dataset.batch_size=6",
        "trainer.enable_progress_bar=false", "logger=many"]


def _tsne(tmp_path: Path, run: Path, layers: str, *extra: str):
    return run_main([*TSNE, f"task.layers=[{layers}]", f"hydra.run.dir={run}", *extra], tmp_path,
                    env={"SELFSUP_VIS_CACHE": str(tmp_path / "cache")})


def _listed(report: Path) -> set[str]:
    """The files report.html shows: figure captions and the data-file table's names."""
    html = report.read_text()
    return set(re.findall(r'<figcaption><a href="([^"]+)">', html)) | set(re.findall(r'<li><a href="([^"]+)">', html))


def test_rerun_into_a_finished_run_is_refused_then_replaced_with_overwrite(tmp_path):
    run = tmp_path / "run"
    assert_ok(_tsne(tmp_path, run, "layer3,layer4"))
    assert (run / "tsne_layer3.png").is_file() and (run / "embedding_layer3.csv").is_file()
    (first_wandb,) = run.glob("wandb/offline-run-*")
    first_wandb_id = first_wandb.name.rsplit("-", 1)[1]
    before = {p: p.read_bytes() for p in (run / "summary.json", run / "status.json", run / ".hydra" / "overrides.yaml",
                                          run / "csv" / "metrics.csv")}

    refused = _tsne(tmp_path, run, "layer4", "task.perplexity=4")
    assert refused.returncode == 2, refused.stderr
    msg = refused.stderr
    assert str(run) in msg and "already holds a finished run" in msg
    assert "hydra.run.dir=" in msg and "task.overwrite=true" in msg
    assert {p: p.read_bytes() for p in before} == before  # the finished run is left exactly as it was

    assert_ok(_tsne(tmp_path, run, "layer4", "task.overwrite=true"))
    assert not (run / "tsne_layer3.png").exists() and not (run / "embedding_layer3.csv").exists()
    assert not (run / "features" / "layer3.npy").exists()
    assert (run / "tsne_layer4.png").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["layers"]) == ["layer4"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert not any("layer3" in f for f in manifest["outputs"] + manifest["logs"])
    # report.html lists exactly this run's files, the ones summary.json lists
    shown = _listed(run / "report.html")
    assert not any("layer3" in f for f in shown), shown
    assert shown == set(summary["outputs"]) - {"report.html"}
    assert {"tsne_layer4.png", "embedding_layer4.csv", "summary.json"} <= shown
    # the loggers hold this run only: no earlier CSV rows, one W&B run with its own id
    assert {r["attempt"] for r in csv.DictReader(open(run / "csv" / "metrics.csv"))} <= {"1"}
    (wandb_run,) = run.glob("wandb/offline-run-*")
    assert wandb_run.name.endswith(f"-{first_wandb_id}-r1")


@pytest.mark.slow
def test_an_unfinished_run_is_resumed_not_refused(tmp_path):
    run = tmp_path / "run"
    assert_ok(_tsne(tmp_path, run, "layer4"))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "running", "ended": None}))  # killed mid-run
    proc = _tsne(tmp_path, run, "layer4")
    assert_ok(proc)
    log = "".join(p.read_text() for p in run.glob("*.log"))
    assert "resuming the unfinished run" in log
    assert json.loads((run / "manifest.json").read_text())["attempt"] == 2
    assert json.loads((run / "status.json").read_text())["status"] == "done"
