"""The shape-bias matrix plot: task function, MMSelfSup-style script, styles, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selfsup_vis.cli import plot_shape_bias as plot_shape_bias_cli
from selfsup_vis.data.cue_conflict_categories import CATEGORIES, HUMAN_ROW_ORDER
from selfsup_vis.shape_bias.analysis import build_groups, read_csv_dirs
from selfsup_vis.shape_bias.plots import default_styles, parse_colors, rgb, row_order
from selfsup_vis.shape_bias.report import FIGURE_STEM, plot_from_csvs

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CSV_DIR = SHARED / "data" / "model-vs-human" / "raw-data" / "cue-conflict"
ICONS = SHARED / "data" / "model-vs-human" / "icons"

needs_data = pytest.mark.skipif(not CSV_DIR.is_dir(), reason=f"shared data missing: {CSV_DIR}")


@needs_data
def test_plot_from_shipped_csvs_writes_figure_and_table(tmp_path):
    plot_from_csvs([CSV_DIR], tmp_path, icons_dir=ICONS)
    for ext in ("pdf", "png"):
        assert (tmp_path / f"{FIGURE_STEM}.{ext}").stat().st_size > 1000
    table = pd.read_csv(tmp_path / "shape_bias.csv")
    assert list(table["name"]) == ["bagnet33", "resnet50", "simclr_resnet50x1", "humans"]
    assert list(table.columns[:18]) == ["name", "shape_bias", *CATEGORIES]
    got = dict(zip(table["name"], table["shape_bias"].round(4)))
    assert got == {"bagnet33": 0.0511, "resnet50": 0.2142, "simclr_resnet50x1": 0.3879,
                   "humans": 0.9587}
    assert table.set_index("name").loc["humans", "num_subjects"] == 10
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert round(saved["humans_mean_of_subjects"], 4) == 0.9576
    assert saved["icons"] is True
    assert saved["models"]["humans"]["color"] == pytest.approx(list(rgb(165, 30, 55)))
    assert saved["models"]["humans"]["marker"] == "D"


@needs_data
def test_plot_selected_models_without_icons_falls_back_to_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_VIS_CACHE", str(tmp_path / "empty-cache"))
    summary = plot_from_csvs([CSV_DIR], tmp_path, models=["resnet50"],
                             plotting_names=["ResNet-50"], colors=[[10, 20, 30]], markers=["s"],
                             icons_dir=None, include_humans=False, formats=["png"])
    assert list(summary["models"]) == ["ResNet-50"]
    assert summary["icons"] is False
    assert summary["models"]["ResNet-50"]["color"] == pytest.approx(list(rgb(10, 20, 30)))
    assert (tmp_path / f"{FIGURE_STEM}.png").is_file()
    assert not (tmp_path / f"{FIGURE_STEM}.pdf").exists()


def test_row_order_and_default_styles():
    df = read_csv_dirs([CSV_DIR]) if CSV_DIR.is_dir() else None
    if df is not None:
        groups = build_groups(df)
        assert tuple(row_order(groups)) == HUMAN_ROW_ORDER
        assert tuple(row_order([g for g in groups if g.name != "humans"])) == HUMAN_ROW_ORDER
    styles = default_styles(["humans", "resnet50", "simclr-resnet50x1"] + [f"m{i}" for i in range(40)])
    assert styles[0] == (rgb(165, 30, 55), "D") and styles[1] == (rgb(65, 90, 140), "o")
    assert styles[2][0] == rgb(210, 150, 0)
    assert len(set(styles)) == len(styles)  # any number of models stays distinguishable


def test_colour_parsing():
    assert parse_colors([65, 90, 140, 0, 0, 0], 2) == [rgb(65, 90, 140), (0.0, 0.0, 0.0)]
    assert parse_colors([[65, 90, 140]], 1) == [rgb(65, 90, 140)]
    assert parse_colors(["#000000"], 1) == [(0.0, 0.0, 0.0)]
    assert parse_colors([], 3) is None
    with pytest.raises(ValueError, match="expected 6 .*R G B triple"):
        parse_colors([65, 90, 140, 1], 2)
    with pytest.raises(ValueError, match="not an R G B triple"):
        parse_colors([[65, 90]], 1)
    with pytest.raises(ValueError, match="outside 0-255"):
        parse_colors([[65, 90, 300]], 1)


@needs_data
def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="model 'nope' is not in the CSVs"):
        plot_from_csvs([CSV_DIR], tmp_path / "a", models=["nope"])
    with pytest.raises(ValueError, match="colors: 4 numbers given for 1 model"):
        plot_from_csvs([CSV_DIR], tmp_path / "b", models=["resnet50"], colors=[1, 2, 3, 4])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        plot_from_csvs([CSV_DIR], blocker / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cue-conflict_x_session-1.csv").write_text("subj,trial\nx,1\n")
    with pytest.raises(ValueError, match=r"cue-conflict_x_session-1\.csv: missing column"):
        plot_from_csvs([bad], tmp_path / "c")
    assert not (tmp_path / "c" / "shape_bias.csv").exists()


def _script():
    """``selfsup-vis-plot-shape-bias``: its ``main(argv)`` is what the command runs."""
    return plot_shape_bias_cli


@needs_data
def test_script_with_mmselfsup_flags(tmp_path, capsys):
    code = _script().main(["--csv-dir", str(CSV_DIR), "--result-dir", str(tmp_path), "--model-names", "resnet50",
                           "simclr-resnet50x1", "--colors", "65", "90", "140", "210", "150", "0", "--markers", "o",
                           "v", "--plotting-names", "ResNet-50", "SimCLR", "--icons-dir", str(ICONS),
                           "--formats", "png"])
    out = capsys.readouterr()
    assert code in (0, None), out.err
    assert "ResNet-50" in out.out and "0.2142" in out.out and "0.9587" in out.out
    table = pd.read_csv(tmp_path / "shape_bias.csv")
    assert list(table["name"]) == ["ResNet-50", "SimCLR", "humans"]


@needs_data
def test_script_reports_bad_colours_without_traceback(tmp_path, capsys):
    code = _script().main(["--csv-dir", str(CSV_DIR), "--result-dir", str(tmp_path),
                        "--model-names", "resnet50", "--colors", "1", "2"])
    assert code == 2
    assert "colors: 2 numbers given for 1 model" in capsys.readouterr().err


@needs_data
def test_plot_task_through_hydra_config(compose_in, tmp_path):
    from omegaconf import open_dict

    from selfsup_vis.tasks.common import run_task

    cfg = compose_in(["task=plot_shape_bias", f"task.csv_dirs=[{CSV_DIR}]",
                      "task.models=[resnet50,simclr-resnet50x1]",
                      "task.plotting_names=[ResNet-50,SimCLR]",
                      "task.colors=[[65,90,140],[210,150,0]]", "task.markers=[o,s]",
                      f"task.icons_dir={ICONS}", "task.formats=[png]", "logger=csv"])
    with open_dict(cfg):
        cfg.pop("hydra")
    summary = run_task(cfg)
    assert list(summary["models"]) == ["ResNet-50", "SimCLR", "humans"]
    assert summary["models"]["SimCLR"]["marker"] == "s"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved["headline"]) == {"shape_bias/ResNet-50", "shape_bias/SimCLR", "shape_bias/humans"}
    assert saved["task"] == "plot_shape_bias" and saved["status"] == "success"
    assert (tmp_path / f"{FIGURE_STEM}.png").is_file() and (tmp_path / "shape_bias.csv").is_file()
    assert "shape_bias/humans" in (tmp_path / "csv" / "metrics.csv").read_text()
    assert list((tmp_path / "csv" / "images").glob("shape_bias_matrixplot*.png"))
    with pytest.raises(Exception, match=r"task\.colours"):
        compose_in(["task=plot_shape_bias", "task.colours=[1]"])  # misspelt key fails early


def test_plot_from_synthetic_csv_uses_its_own_categories(tmp_path):
    import torch

    from selfsup_vis.shape_bias.metric import ShapeBias, write_rows_csv

    classes = ["circle", "square", "star"]
    m = ShapeBias(classes, "identity", subject="tiny")
    m.update(torch.eye(3)[[0, 2, 2]], ["circle/circle1-square1.png", "square/square1-star1.png",
                                       "star/star1-circle1.png"])
    write_rows_csv(tmp_path / "csvs" / "cue-conflict_tiny_session-1.csv", m.rows())
    summary = plot_from_csvs([tmp_path / "csvs"], tmp_path / "out", formats=["png"])
    assert summary["categories"] == sorted(classes)
    assert summary["models"]["tiny"]["shape_bias"] == pytest.approx(2 / 3)
    assert (tmp_path / "out" / f"{FIGURE_STEM}.png").is_file()
