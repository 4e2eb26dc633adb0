"""plot_shape_bias identifies a model by (subj, file): two different files with one subj are
two models, the same file found twice is counted once; raw-data CSVs are found by header
(texture-vs-shape's names too); our CSVs use model-vs-human's file naming."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest

from selfsup_vis.shape_bias.analysis import (
    build_groups,
    csv_name,
    read_csv_dirs,
    resolve_subject,
)
from selfsup_vis.shape_bias.metric import CSV_COLUMNS
from selfsup_vis.shape_bias.report import plot_from_csvs
from tests.conftest import DATA

SHAPES = ["airplane", "bear", "bicycle", "bird"]
MVH_CSVS = DATA / "model-vs-human" / "raw-data" / "cue-conflict"
PUBLISHED = {"resnet50": 0.2142, "bagnet33": 0.0511, "simclr_resnet50x1": 0.3879, "humans": 0.9587}


def _write(path: Path, subj: str, shape_decisions: int, n: int = 12) -> Path:
    """``n`` conflict trials of ``subj``, the first ``shape_decisions`` decided by shape, the
    rest by texture: shape bias = shape_decisions / n."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for i in range(n):
            shape, texture = SHAPES[i % 4], SHAPES[(i + 1) % 4]
            w.writerow({"subj": subj, "session": 1, "trial": i + 1, "rt": "NaN",
                        "object_response": shape if i < shape_decisions else texture,
                        "category": shape, "condition": 0,
                        "imagename": f"{shape}{i + 1}-{texture}{i + 1}.png"})
    return path


def test_two_files_with_one_subj_are_two_models(tmp_path, caplog):
    _write(tmp_path / "runA" / "cue-conflict_alexnet_session-1.csv", "alexnet", 3)   # 0.25
    _write(tmp_path / "runB" / "cue-conflict_alexnet_session-1.csv", "alexnet", 9)   # 0.75
    with caplog.at_level(logging.WARNING):
        groups = {g.name: g for g in build_groups(read_csv_dirs([tmp_path / "runA", tmp_path / "runB"]))}
    assert groups["runA/alexnet"].shape_bias == 0.25 and groups["runB/alexnet"].shape_bias == 0.75
    assert "alexnet" not in groups  # formerly one pooled 0.5
    assert "appears in 2 different CSV files" in caplog.text
    df = read_csv_dirs([tmp_path / "runA", tmp_path / "runB"])
    with pytest.raises(ValueError, match=r"'alexnet' is ambiguous.*runA/alexnet.*runB/alexnet"):
        resolve_subject(df, "alexnet")
    assert resolve_subject(df, "runB/alexnet") == "runB/alexnet"
    summary = plot_from_csvs([tmp_path / "runA", tmp_path / "runB"], tmp_path / "out", formats=["png"])
    assert summary["models"]["runA/alexnet"]["shape_bias"] == 0.25
    assert summary["models"]["runB/alexnet"]["files"] == [str(tmp_path / "runB" / "cue-conflict_alexnet_session-1.csv")]


def test_the_same_file_in_two_folders_is_counted_once(tmp_path, caplog):
    a = _write(tmp_path / "a" / "cue-conflict_alexnet_session-1.csv", "alexnet", 3)
    (tmp_path / "b").mkdir()
    shutil.copy(a, tmp_path / "b" / a.name)
    with caplog.at_level(logging.WARNING):
        [g] = build_groups(read_csv_dirs([tmp_path / "a", tmp_path / "b"]))
    assert g.name == "alexnet" and g.stats["num_conflict"] == 12  # not 24
    assert "identical to" in caplog.text and "counted once" in caplog.text


def test_csvs_are_found_by_header_including_texture_vs_shape_names(tmp_path):
    _write(tmp_path / "style-transfer-512-nomask-experiment_vgg16_session-1.csv", "vgg16", 6)
    _write(tmp_path / "my_results.csv", "resnet18", 12)  # any name, the right header
    (tmp_path / "shape_bias.csv").write_text("name,shape_bias\nvgg16,0.5\n")  # a summary table
    groups = {g.name: g.shape_bias for g in build_groups(read_csv_dirs([tmp_path]))}
    assert groups == {"vgg16": 0.5, "resnet18": 1.0}
    df = read_csv_dirs([tmp_path])
    assert resolve_subject(df, "vgg16") == "vgg16"


def test_our_csv_names_follow_model_vs_human():
    assert csv_name("simclr_resnet50x1") == "cue-conflict_simclr-resnet50x1_session-1.csv"
    assert csv_name("mobilenetv3_small_050") == "cue-conflict_mobilenetv3-small-050_session-1.csv"


@pytest.mark.skipif(not MVH_CSVS.is_dir(), reason=f"shared data missing: {MVH_CSVS}")
def test_published_values_hold_with_the_data_found_twice(tmp_path):
    for d in ("one", "two"):
        shutil.copytree(MVH_CSVS, tmp_path / d)
    (tmp_path / "two" / "shape_bias.csv").write_text("name,shape_bias\nresnet50,0.2\n")
    groups = {g.name: g for g in build_groups(read_csv_dirs([tmp_path / "one", tmp_path / "two"]))}
    assert set(groups) == set(PUBLISHED)
    for name, value in PUBLISHED.items():
        assert round(groups[name].shape_bias, 4) == value, name
    assert len(groups["humans"].subjects) == 10
