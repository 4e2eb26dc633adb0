"""Shape bias: category mapping, the torchmetrics metric and the CSV analysis agree with
model-vs-human's published numbers and with each other."""

from __future__ import annotations

import filecmp
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_vis.data.cue_conflict_categories import (
    CATEGORIES,
    HUMAN_ROW_ORDER,
    IMAGENET_INDICES,
    parse_stimulus,
    texture_of,
)
from selfsup_vis.shape_bias.analysis import (
    build_groups,
    is_human,
    mean_of_subjects,
    read_csv,
    read_csv_dirs,
    resolve_subject,
    shape_bias_stats,
    subjects,
)
from selfsup_vis.shape_bias.metric import CSV_COLUMNS, ShapeBias, category_scores

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MVH = SHARED / "data" / "model-vs-human"
CSV_DIR = MVH / "raw-data" / "cue-conflict"
MODEL_CSVS = {
    "resnet50": "cue-conflict_resnet50_session-1.csv",
    "bagnet33": "cue-conflict_bagnet33_session-1.csv",
    "simclr_resnet50x1": "cue-conflict_simclr-resnet50x1_session-1.csv",
}
PUBLISHED = {"resnet50": 0.2142, "bagnet33": 0.0511, "simclr_resnet50x1": 0.3879, "humans": 0.9587}

needs_data = pytest.mark.skipif(not CSV_DIR.is_dir(), reason=f"shared data missing: {CSV_DIR}")


# ----------------------------------------------------------------------------- categories
@pytest.mark.skipif(not (MVH / "imagenet_to_16.json").is_file(), reason="shared data missing")
def test_imagenet_mapping_matches_published_json():
    published = json.loads((MVH / "imagenet_to_16.json").read_text())
    assert {k: list(v) for k, v in IMAGENET_INDICES.items()} == published
    assert sum(len(v) for v in IMAGENET_INDICES.values()) == 207
    assert list(CATEGORIES) == sorted(published)
    all_idx = [i for v in IMAGENET_INDICES.values() for i in v]
    assert len(set(all_idx)) == 207 and 0 <= min(all_idx) and max(all_idx) < 1000


def test_stimulus_parsing():
    s = parse_stimulus("airplane/airplane10-bicycle2.png")
    assert (s.shape, s.shape_number, s.texture, s.texture_number, s.extension) == (
        "airplane", 10, "bicycle", 2, ".png")
    assert s.name == "airplane10-bicycle2.png"
    assert parse_stimulus("circle3-dots1").extension == ""
    assert texture_of("0001_s5n_s01_0_bird_00_bird3-bird2.png") == "bird"
    assert texture_of("airplane1-bicycle2.png") == "bicycle"
    with pytest.raises(ValueError, match="not a cue-conflict stimulus name"):
        parse_stimulus("airplane/photo.png")
    with pytest.raises(ValueError, match="folder 'bear' is not the shape 'airplane'"):
        parse_stimulus("bear/airplane1-bicycle2.png")


def test_category_scores_is_mean_softmax_over_indices():
    logits = torch.randn(3, 1000)
    scores = category_scores(logits)
    probs = torch.softmax(logits, 1)
    dog = CATEGORIES.index("dog")
    assert torch.allclose(scores[:, dog], probs[:, list(IMAGENET_INDICES["dog"])].mean(1))
    # a single huge logit inside a category's indices decides for that category
    logits = torch.zeros(1, 1000)
    logits[0, 404] = 20.0  # airplane
    assert category_scores(logits).argmax(1).item() == CATEGORIES.index("airplane")
    with pytest.raises(ValueError, match="1000"):
        category_scores(torch.zeros(2, 16))


# --------------------------------------------------------------------------------- metric
def test_metric_hand_made_exact_fractions():
    m = ShapeBias()
    names = ["airplane/airplane1-bicycle2.png", "airplane/airplane2-cat1.png",
             "bear/bear1-clock1.png", "bear/bear2-bear1.png", "cat/cat1-dog1.png"]
    decisions = torch.tensor([CATEGORIES.index(c) for c in
                              ("airplane", "cat", "bird", "bear", "dog")])
    m.update(decisions, names, index=torch.arange(5))
    out = m.compute()
    # conflict rows: 4 (bear2-bear1 excluded); shape hits 1, texture hits 2 (cat, dog)
    assert out["num_conflict"] == 4 and out["num_shape_hits"] == 1 and out["num_texture_hits"] == 2
    assert out["shape_bias"].item() == pytest.approx(1 / 3)
    per = dict(zip(CATEGORIES, out["shape_bias_per_category"].tolist()))
    assert per["airplane"] == pytest.approx(0.5)
    assert math.isnan(per["bear"])  # one conflict row, neither hit -> undefined, not a crash
    assert per["cat"] == 0.0 and math.isnan(per["truck"])
    assert out["shape_accuracy"].item() == pytest.approx(0.25)
    assert out["texture_accuracy"].item() == pytest.approx(0.5)
    assert out["accuracy"].item() == pytest.approx(2 / 5)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metric_empty_and_no_hits_give_nan():
    m = ShapeBias()
    assert math.isnan(m.compute()["shape_bias"].item())
    assert m.rows() == []
    m = ShapeBias()
    m.update(torch.tensor([CATEGORIES.index("bird")]), ["airplane/airplane1-bicycle2.png"])
    assert math.isnan(m.compute()["shape_bias"].item())


def test_metric_from_logits_and_identity_mapping():
    m = ShapeBias()
    logits = torch.full((2, 1000), -10.0)
    logits[0, 444] = 10.0  # bicycle = the texture of airplane1-bicycle2
    logits[1, 294] = 10.0  # bear = the shape
    m.update(logits, ["airplane/airplane1-bicycle2.png", "bear/bear1-clock1.png"])
    assert m.compute()["shape_bias"].item() == pytest.approx(0.5)

    classes = ["circle", "square", "star"]
    m = ShapeBias(categories=classes, decision_mapping="identity", subject="tiny")
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.1, 0.7, 0.2]])
    m.update(scores, ["circle/circle1-square1.png", "square/square1-star1.png",
                      "star/star1-square1.png"], index=[0, 1, 2])
    out = m.compute()
    assert out["num_shape_hits"] == 1 and out["num_texture_hits"] == 2
    rows = m.rows()
    assert [r["imagename"] for r in rows] == sorted(r["imagename"] for r in rows)
    assert rows[0] == {"subj": "tiny", "session": 1, "trial": 1, "rt": "NaN",
                       "object_response": "circle", "category": "circle", "condition": "NaN",
                       "imagename": "circle1-square1.png"}
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        m.update(torch.zeros(1, 1000), ["circle/circle1-square1.png"])
    with pytest.raises(ValueError, match="texture 'dog' is not one of"):
        m.update(torch.zeros(1, 3), ["circle/circle1-dog1.png"])


def test_metric_deduplicates_padding_and_orders_by_name():
    names = ["bear/bear1-clock1.png", "airplane/airplane1-bicycle2.png", "cat/cat1-dog1.png"]
    dec = torch.tensor([CATEGORIES.index(c) for c in ("bear", "bicycle", "cat")])
    single = ShapeBias()
    single.update(dec, names, index=torch.tensor([0, 1, 2]))
    padded = ShapeBias()  # what DistributedSampler does: repeats the first samples
    padded.update(dec[[2, 0]], [names[2], names[0]], index=torch.tensor([2, 0]))
    padded.update(dec[[1, 2]], [names[1], names[2]], index=torch.tensor([1, 2]))
    a, b = single.compute(), padded.compute()
    assert b["num_duplicates"] == 1 and a["num_duplicates"] == 0
    for k in a:
        if k != "num_duplicates":
            assert torch.equal(a[k].nan_to_num(-1), b[k].nan_to_num(-1)), k
    assert single.rows() == padded.rows()
    assert [r["trial"] for r in padded.rows()] == [1, 2, 3]
    assert padded.rows()[0]["imagename"] == "airplane1-bicycle2.png"


# ---------------------------------------------------------------------------------- CSVs
@needs_data
def test_published_shape_biases_reproduced():
    df = read_csv_dirs([CSV_DIR])
    groups = {g.name: g for g in build_groups(df)}
    assert list(groups)[-1] == "humans"
    for name, value in PUBLISHED.items():
        assert round(groups[name].shape_bias, 4) == value, name
    humans = [s for s in subjects(df) if is_human(s)]
    assert len(humans) == 10
    assert round(mean_of_subjects(df, humans), 4) == 0.9576


@needs_data
def test_per_category_values_pool_back_to_overall():
    df = read_csv_dirs([CSV_DIR])
    for g in build_groups(df):
        sub = df[df["subj"].isin(g.subjects)]
        shape_hits = texture_hits = 0
        for cat in CATEGORIES:
            s = shape_bias_stats(sub[sub["shape"] == cat])
            shape_hits += s["num_shape_hits"]
            texture_hits += s["num_texture_hits"]
            if s["num_shape_hits"] + s["num_texture_hits"]:
                assert g.per_category[cat] == pytest.approx(
                    s["num_shape_hits"] / (s["num_shape_hits"] + s["num_texture_hits"]))
        assert shape_hits / (shape_hits + texture_hits) == g.shape_bias
    # the humans' per-category order is model-vs-human's published row order
    humans = build_groups(df)[-1]
    order = sorted(CATEGORIES, key=lambda c: 1 - humans.per_category[c])
    assert tuple(order) == HUMAN_ROW_ORDER


@needs_data
@pytest.mark.parametrize("subject", ["resnet50", "bagnet33", "simclr_resnet50x1", "subject-03"])
def test_metric_fed_csv_decisions_agrees_with_csv_path(subject, tmp_path):
    df = read_csv_dirs([CSV_DIR])
    sub = df[df["subj"] == subject].reset_index(drop=True)
    expected = shape_bias_stats(sub)
    m = ShapeBias(subject=subject)
    decisions = torch.tensor([CATEGORIES.index(r) if r in CATEGORIES else -1
                              for r in sub["response"]])
    names = [f"{c}/{s}" for c, s in zip(sub["shape"], sub["stimulus"])]
    perm = torch.randperm(len(sub), generator=torch.Generator().manual_seed(0))
    for chunk in perm.split(97):  # shuffled batches: the order must not matter
        m.update(decisions[chunk], [names[i] for i in chunk], index=chunk)
    out = m.compute()
    assert out["shape_bias"].item() == expected["shape_bias"]
    got = out["shape_bias_per_category"].tolist()
    want = [expected["shape_bias_per_category"][c] for c in CATEGORIES]
    assert np.array_equal(np.array(got), np.array(want), equal_nan=True)
    for k in ("num_conflict", "num_shape_hits", "num_texture_hits", "num_no_response"):
        assert int(out[k]) == expected[k], k
    if not is_human(subject):  # the metric rewrites the published model CSV byte for byte
        path = m.write_csv(tmp_path / MODEL_CSVS[subject])
        assert filecmp.cmp(path, CSV_DIR / MODEL_CSVS[subject], shallow=False)


@needs_data
def test_resolve_subject_by_file_name_and_missing_model():
    df = read_csv_dirs([CSV_DIR])
    assert resolve_subject(df, "simclr-resnet50x1") == "simclr_resnet50x1"
    assert resolve_subject(df, "ResNet50") == "resnet50"
    with pytest.raises(ValueError, match=r"model 'vit_b16' is not in the CSVs.*resnet50"):
        resolve_subject(df, "vit_b16")


@pytest.mark.parametrize("header,missing", [
    ("subject,session,trial,rt,object_response,category,condition,imagename", "subj"),
    ("subj,session,trial,rt,object_response,condition,imagename", "category"),
])
def test_bad_csv_header_names_file_and_column(tmp_path, header, missing):
    path = tmp_path / "cue-conflict_bad_session-1.csv"
    path.write_text(header + "\nx,1,1,NaN,bird,bird,NaN,bird1-cat1.png\n")
    with pytest.raises(ValueError, match=rf"{path.name}.*missing column\(s\) \['{missing}'\]"):
        read_csv(path)


def test_csv_header_is_case_insensitive_and_empty_file_rejected(tmp_path):
    path = tmp_path / "cue-conflict_m_session-1.csv"
    path.write_text(",".join(c.upper() for c in CSV_COLUMNS) + "\nm,1,1,NaN,cat,bird,NaN,"
                    "bird1-cat1.png\n")
    df = read_csv(path)
    assert df.loc[0, "texture"] == "cat" and df.loc[0, "response"] == "cat"
    empty = tmp_path / "cue-conflict_e_session-1.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty CSV"):
        read_csv(empty)
    with pytest.raises(FileNotFoundError, match="CSV directory not found"):
        read_csv_dirs([tmp_path / "missing"])


def test_csv_dir_without_matching_files_lists_what_is_there(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FileNotFoundError, match=r"no files matching.*results\.csv"):
        read_csv_dirs([tmp_path])
