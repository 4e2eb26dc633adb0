"""Loss and learning-rate curves of task=pretrain: read back from the CSV logger's metrics.csv,
drawn with provenance into the run directory (training_curves.png + .csv), embedded in
report.html."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from selfsup_vis.report.curves import curves_figure, read_training_curves
from tests.conftest import assert_ok, run_main

HEADER = ["attempt", "epoch", "lr-AdamW/pg1", "lr-AdamW/pg2", "step", "train/loss", "val/loss", "train/acc"]


def test_curves_are_read_by_step_with_a_requeued_step_taking_the_last_value(tmp_path: Path) -> None:
    rows = [
        [1, "", 0.1, 0.1, 0, "", "", ""],
        [1, 0, "", "", 0, 2.0, "", 0.5],
        [1, "", 0.2, 0.2, 1, "", "", ""],
        [1, 0, "", "", 1, 1.5, "", ""],
        [2, 0, "", "", 1, 1.4, "", ""],  # the requeued job logs step 1 again
        [2, 0, "", "", 2, "nan", 1.2, ""],
    ]
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    loss, lr = read_training_curves(path)
    assert loss == {"train/loss": ([0.0, 1.0], [2.0, 1.4]), "val/loss": ([2.0], [1.2])}
    assert lr == {"lr-AdamW/pg1": ([0.0, 1.0], [0.1, 0.2]), "lr-AdamW/pg2": ([0.0, 1.0], [0.1, 0.2])}
    fig = curves_figure(loss, lr)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "learning rate"]
    # identical parameter groups are one line, named together
    assert [line.get_label() for line in axes[1].get_lines()] == ["lr-AdamW/pg1 (= pg2)"]


@pytest.mark.slow
def test_pretrain_report_shows_loss_and_learning_rate(tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "run"
    proc = run_main(["task=pretrain", "model=mae_tiny", "trainer.max_epochs=2", "callbacks=none",
                     "trainer.log_every_n_steps=2", f"hydra.run.dir={out}"], tmp_path)
    assert_ok(proc)
    png, numbers = out / "training_curves.png", out / "training_curves.csv"
    assert png.is_file() and numbers.is_file()
    assert "pretrain: mae_tiny" in Image.open(png).info["Description"]  # the provenance footer
    with open(numbers, newline="") as f:
        saved = list(csv.DictReader(f))
    with open(out / "csv" / "metrics.csv", newline="") as f:
        logged = [(r["step"], float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    assert [(r["step"], float(r["value"])) for r in saved if r["series"] == "train/loss"] == logged
    assert len(logged) >= 3 and any(r["series"].startswith("lr-") for r in saved)
    html = (out / "report.html").read_text()
    assert "training_curves.png" in html and "training_curves.csv" in html
