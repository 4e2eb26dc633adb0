"""Shape bias that can be told apart and trusted: error consistency with the human subjects,
random-weight CSVs marked on the plot, a degenerate-classifier warning, a palette that never
looks like the reference models'."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from selfsup_vis.shape_bias.analysis import (
    build_groups,
    provenance_sidecar,
    read_csv,
    read_csv_dirs,
)
from selfsup_vis.shape_bias.error_consistency import cohens_kappa
from selfsup_vis.shape_bias.plots import (
    MIN_REFERENCE_DISTANCE,
    REFERENCE_STYLES,
    color_distance,
    default_styles,
    legend_label,
)
from selfsup_vis.shape_bias.report import plot_from_csvs
from tests.conftest import DATA, needs_shared

CSV_DIR = DATA / "model-vs-human" / "raw-data" / "cue-conflict"


def _copy(tmp_path, *names):
    src = needs_shared(CSV_DIR)
    dst = tmp_path / "csvs"
    dst.mkdir()
    for n in names:
        shutil.copy(src / n, dst / n)
    return dst


def _hand_kappa(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Cohen's κ from the 2×2 table of per-trial correctness (Geirhos et al. 2020, eq. 1–3)."""
    a = a.set_index("stimulus")
    b = b.set_index("stimulus").loc[a.index]
    ca = (a["object_response"] == a["category"]).to_numpy()
    cb = (b["object_response"] == b["category"]).to_numpy()
    n = len(ca)
    both_right, both_wrong = int((ca & cb).sum()), int((~ca & ~cb).sum())
    c_obs = (both_right + both_wrong) / n
    p1, p2 = ca.sum() / n, cb.sum() / n
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return (c_obs - c_exp) / (1 - c_exp)


def test_kappa_of_identical_and_of_independent_observers():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    assert cohens_kappa(a, a).kappa == 1.0
    # same accuracy (1/2), errors on opposite trials: κ = (0 − 0.5) / 0.5 = −1
    assert cohens_kappa(a, ~a).kappa == pytest.approx(-1.0)
    # observed 4/6 agree, accuracies 1/2 and 1/2 -> expected 1/2 -> κ = 1/3
    b = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    got = cohens_kappa(a, b)
    assert (got.observed, got.expected, got.kappa) == pytest.approx((4 / 6, 0.5, 1 / 3))
    with pytest.raises(ValueError, match="equally long"):
        cohens_kappa(a, b[:3])


def test_error_consistency_equals_hand_computation_on_the_published_csvs(tmp_path):
    dst = _copy(tmp_path, "cue-conflict_resnet50_session-1.csv",
                "cue-conflict_subject-01_session_1.csv", "cue-conflict_subject-02_session_1.csv")
    summary = plot_from_csvs([dst], tmp_path / "out", formats=["png"])
    resnet = read_csv(dst / "cue-conflict_resnet50_session-1.csv")
    subjects = {s: read_csv(dst / f"cue-conflict_{s}_session_1.csv")
                for s in ("subject-01", "subject-02")}
    ec = summary["error_consistency"]["resnet50"]
    for s, frame in subjects.items():
        assert ec["per_subject"][s]["error_consistency"] == pytest.approx(_hand_kappa(resnet, frame))
        assert ec["per_subject"][s]["n_trials"] == 1280
    assert ec["error_consistency_mean"] == pytest.approx(
        np.mean([_hand_kappa(resnet, f) for f in subjects.values()]))
    humans = summary["error_consistency"]["humans"]["per_subject"]
    assert humans["subject-01 vs subject-02"]["error_consistency"] == pytest.approx(
        _hand_kappa(subjects["subject-01"], subjects["subject-02"]))
    assert (tmp_path / "out" / "cue-conflict_error-consistency.png").stat().st_size > 5000


def test_trials_that_differ_are_refused(tmp_path):
    dst = _copy(tmp_path, "cue-conflict_resnet50_session-1.csv",
                "cue-conflict_subject-01_session_1.csv")
    path = dst / "cue-conflict_resnet50_session-1.csv"
    pd.read_csv(path).iloc[:-5].to_csv(path, index=False)  # a model run on a subset
    with pytest.raises(ValueError, match="trials differ"):
        plot_from_csvs([dst], tmp_path / "out", formats=["png"])


def test_a_constant_classifier_is_flagged_degenerate(tmp_path):
    dst = _copy(tmp_path, "cue-conflict_resnet50_session-1.csv")
    frame = pd.read_csv(dst / "cue-conflict_resnet50_session-1.csv")
    frame.assign(subj="constant", object_response="airplane").to_csv(
        dst / "cue-conflict_constant_session-1.csv", index=False)
    summary = plot_from_csvs([dst], tmp_path / "out", formats=["png"])
    flags = summary["warnings"]["constant"]
    # 'airplane' is right for 75 airplane shapes and 75 airplane textures (80 − 5 non-conflict
    # each): shape bias 0.5 from 150 of 1200 decided trials
    assert flags == ["degenerate classifier: answers 'airplane' for 1280 of 1280 images; only "
                     "150 of 1200 conflict images decided for shape or texture"]
    assert "resnet50" not in summary["warnings"]
    assert summary["models"]["constant"]["shape_bias"] == 0.5
    assert summary["models"]["constant"]["decisions"] == 150
    # the number it rests on is in the legend of every model
    g = {g.name: g for g in build_groups(read_csv_dirs([dst]))}["constant"]
    assert "150/1200 decided" in legend_label(g) and legend_label(g).endswith("⚠")


def test_a_random_weight_csv_is_marked_on_the_plot(tmp_path):
    dst = _copy(tmp_path, "cue-conflict_resnet50_session-1.csv",
                "cue-conflict_bagnet33_session-1.csv")
    side = provenance_sidecar(dst / "cue-conflict_resnet50_session-1.csv")
    side.write_text(json.dumps({"flag": "RANDOM WEIGHTS", "weights": "random"}))
    summary = plot_from_csvs([dst], tmp_path / "out", formats=["png"])
    assert summary["models"]["resnet50"]["flags"] == ["RANDOM WEIGHTS"]
    assert summary["models"]["bagnet33"]["flags"] == []
    groups = {g.name: g for g in build_groups(read_csv_dirs([dst]))}
    assert "RANDOM WEIGHTS" in legend_label(groups["resnet50"])
    assert "RANDOM" not in legend_label(groups["bagnet33"])


def test_user_models_never_look_like_the_reference_models():
    styles = default_styles([f"model{i}" for i in range(30)])
    ref_markers = {m for _, m in REFERENCE_STYLES.values()}
    for color, marker in styles:
        assert marker not in ref_markers
        for ref_color, _ in REFERENCE_STYLES.values():
            assert color_distance(color, ref_color) >= MIN_REFERENCE_DISTANCE
    # the colour the old palette gave the second model was SimCLR's orange in all but name
    assert color_distance((230 / 255, 159 / 255, 0.0), REFERENCE_STYLES["simclrresnet50x1"][0]) < 10
