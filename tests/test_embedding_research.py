"""Issue 13: the metric space, colour by any labeling, thumbnails, Procrustes, CKA and
task=compare_embeddings end to end (two tiny MAE checkpoints trained in the test)."""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from selfsup_vis.data.synthetic import SyntheticShapes
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding
from selfsup_vis.embedding.compare import cka_matrix, linear_cka, minibatch_cka, procrustes_align
from selfsup_vis.embedding.labels import parse_labeling_spec, resolve_labeling, resolve_labelings
from selfsup_vis.embedding.plots import class_colors, plot_embedding
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.space import describe_space, to_metric_space
from selfsup_vis.embedding.thumbnails import grid_pick, snapped_centres

N_JOBS1 = {"n_jobs": 1}  # a shared 2-core machine: OpenMP threads fighting for it are ~30x slower


# --- metric ----------------------------------------------------------------------------------
def _norm_nuisance(n: int = 600, k: int = 6, dim: int = 32, seed: int = 0):
    """Clusters that differ in direction (a shared direction plus a small per-cluster offset)
    with norms scaled at random per row (factor 0.05-20): the classes live in the angles, the
    norm is a nuisance larger than the class differences."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    shared /= np.linalg.norm(shared)
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % k
    x = shared + 0.05 * centres[labels] + 0.004 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scale = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=(n, 1)))
    return (x * scale).astype(np.float32), labels


@pytest.mark.slow
def test_cosine_recovers_clusters_under_norm_nuisance_euclidean_does_not():
    x, y = _norm_nuisance()
    out = {}
    for metric in ("cosine", "euclidean"):
        res = compute_embedding(x, EmbedParams(backend="opentsne", metric=metric, seed=0, **N_JOBS1))
        q = embedding_quality(x, res.coords, y, seed=0, metric=metric)
        out[metric] = q
        assert res.params["space"] == describe_space(metric) == q["knn_feat_space"]
    print({m: {k: round(out[m][k], 3) for k in ("knn_feat@10", "knn_2d@10", "trustworthiness")} for m in out})
    assert out["cosine"]["knn_2d@10"] > 0.95 and out["cosine"]["knn_feat@10"] > 0.95
    assert out["euclidean"]["knn_2d@10"] < 0.7 and out["euclidean"]["knn_feat@10"] < 0.7


def test_metric_space_transform():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)) * [1, 10, 100, 0]
    assert to_metric_space(x, "euclidean") is x  # no copy when nothing changes
    c = to_metric_space(x, "cosine")
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    s = to_metric_space(x, "euclidean", standardize=True)
    np.testing.assert_allclose(s[:, :3].std(axis=0), 1.0, rtol=1e-4)
    assert np.all(s[:, 3] == 0)  # a constant dimension stays 0
    assert describe_space("cosine", True) == "cosine (standardised, L2-normalised)"
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        to_metric_space(x, "manhattan")


def test_metric_is_typed_in_the_config(compose_in):
    from hydra.errors import ConfigCompositionException

    cfg = compose_in(["task=tsne"])
    assert str(cfg.task.metric) == "cosine" and cfg.task.color_by == "label"
    with pytest.raises(ConfigCompositionException):
        compose_in(["task=tsne", "task.metric=manhatan"])


# --- labelings -------------------------------------------------------------------------------
def test_texture_and_shape_labelings_of_synthetic_conflict_images():
    ds = SyntheticShapes("conflict", num_classes=6, conflict_per_pair=4)
    labels = np.asarray(ds.labels)
    texture = resolve_labeling("texture", ds.names, labels, ds.classes)
    shape = resolve_labeling("shape", ds.names, labels, ds.classes)
    true_texture = np.array([ds.texture_label(i) for i in range(len(ds))])
    assert texture.classes == sorted(ds.classes) and shape.classes == sorted(ds.classes)
    assert np.array_equal(np.array(texture.classes)[texture.values], np.array(ds.classes)[true_texture])
    assert np.array_equal(np.array(shape.classes)[shape.values], np.array(ds.classes)[labels])
    # features that encode the texture (as constructed): kNN by texture ~1, by shape ~chance
    rng = np.random.default_rng(0)
    feats = np.eye(6)[true_texture] * 3 + rng.normal(size=(len(ds), 6)) * 0.3
    coords = feats[:, :2] + rng.normal(size=(len(ds), 2)) * 0.01
    q = embedding_quality(feats, coords, labels, extra_labels={"texture": texture.values, "shape": shape.values})
    print({k: v["knn_feat@10"] for k, v in q["labelings"].items()})
    assert q["labelings"]["texture"]["knn_feat@10"] > 0.95
    assert q["labelings"]["shape"]["knn_feat@10"] < 0.35
    assert q["labelings"]["shape"]["knn_feat@10"] == q["knn_feat@10"]  # shape == the folder label


def test_regex_and_csv_labelings(tmp_path):
    names = ["cat/a_day.png", "cat/b_night.png", "dog/c_day.png", "dog/d.png"]
    labels, classes = np.array([0, 0, 1, 1]), ["cat", "dog"]
    lab = resolve_labeling("regex:_(day|night)", names, labels, classes)
    assert lab.classes == ["(no match)", "day", "night"] and lab.n_unmatched == 1 and lab.notes
    assert resolve_labeling("regex:^(?P<label>[a-z]+)/", names, labels, classes).classes == ["cat", "dog"]
    with pytest.raises(ValueError, match="matches none"):
        resolve_labeling("regex:zebra", names, labels, classes)
    with pytest.raises(ValueError, match="invalid regular expression"):
        parse_labeling_spec("regex:(")
    table = tmp_path / "meta.csv"
    table.write_text("path,brightness,site\n" + "".join(
        f"{n},{0.5 + i * 0.1},{'ab'[i % 2]}\n" for i, n in enumerate(names)))
    num = resolve_labeling(f"csv:{table}:brightness", names, labels, classes)
    assert num.numeric and np.allclose(num.values, [0.5, 0.6, 0.7, 0.8])
    cat = resolve_labeling(f"csv:{table}:site", ["a_day.png", *names[1:]], labels, classes)  # base name
    assert cat.classes == ["a", "b"] and cat.values.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="has no column 'nope'"):
        parse_labeling_spec(f"csv:{table}:nope")
    with pytest.raises(ValueError, match="1 of 5 samples are not in"):
        resolve_labeling(f"csv:{table}:site", [*names, "cat/zzz.png"], np.zeros(5, int), classes)
    with pytest.raises(ValueError, match="expected one of 'label'"):
        parse_labeling_spec("colour")
    colour, others = resolve_labelings([parse_labeling_spec("shape")], ["circle/circle1-square1.png"],
                                       np.zeros(1, int), ["circle"])
    assert colour.name == "shape" and set(others) == {"label"}  # the colour one is the top-level one
    with pytest.raises(ValueError, match="not cue-conflict stimulus names"):
        resolve_labeling("texture", names, labels, classes)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours in [0, 1] (..., 3), to measure how alike two colours look."""
    rgb = np.asarray(rgb, dtype=float)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_numeric_colouring_and_palette(tmp_path):
    lab = srgb_to_lab(class_colors(20))
    d = np.linalg.norm(lab[:, None] - lab[None], axis=2) + np.eye(20) * 1e9
    assert d.min() > 20  # no near-identical pair (CIELAB ΔE76) up to 20 classes
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(300, 2))
    fig = plot_embedding(coords, coords[:, 0].astype(float), None, "numeric", footer="space: cosine",
                         color_label="brightness")
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


# --- thumbnails ------------------------------------------------------------------------------
def test_thumbnail_layout_one_per_cell():
    rng = np.random.default_rng(0)
    coords = np.concatenate([rng.normal(size=(1500, 2)) * 0.05, rng.uniform(-3, 3, size=(500, 2))])
    picked = grid_pick(coords, grid=12)
    centres = snapped_centres(coords, picked, 12)
    assert len({tuple(np.round(c, 9)) for c in centres}) == len(picked)  # one thumbnail per cell
    cell = (coords.max(0) - coords.min(0)).max() / 12
    assert np.abs(centres - coords[picked]).max() <= 0.5 * cell + 1e-9  # snapped within half a cell
    assert len(picked) < 12 * 12 and len(grid_pick(coords, 12, max_n=10)) == 10


@pytest.mark.slow
def test_thumbnails_render_at_n2000_and_change_the_png():
    rng = np.random.default_rng(0)
    n = 2000
    coords = rng.normal(size=(n, 2))
    labels = np.arange(n) % 5
    picked = grid_pick(coords, grid=20)
    images = [rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8) for _ in picked]
    pngs = []
    start = time.perf_counter()
    for thumbs in (None, (picked, images)):
        fig = plot_embedding(coords, labels, list("abcde"), "thumbs", thumbnails=thumbs, thumbnail_grid=20)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        pngs.append(np.asarray(Image.open(buf).convert("RGB")))
        if thumbs is not None:
            for fmt in ("pdf", "svg"):
                vec = io.BytesIO()
                fig.savefig(vec, format=fmt)
                assert vec.tell() > 10_000
    elapsed = time.perf_counter() - start
    assert elapsed < 60, elapsed
    plain, with_thumbs = pngs
    assert plain.shape != with_thumbs.shape or np.abs(plain.astype(int) - with_thumbs).mean() > 5


# --- Procrustes and CKA ----------------------------------------------------------------------
def test_procrustes_recovers_a_known_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(500, 2))
    theta = 1.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    reflect = np.diag([1.0, -1.0])
    source = 3.5 * target @ (rot @ reflect) + np.array([7.0, -2.0])
    res = procrustes_align(source, target)
    np.testing.assert_allclose(res.aligned, target, atol=1e-6)
    np.testing.assert_allclose(res.rotation, (rot @ reflect).T, atol=1e-6)
    assert abs(res.scale - 1 / 3.5) < 1e-6 and res.residual < 1e-6
    no_reflection = procrustes_align(source, target, reflection=False)
    assert np.linalg.det(no_reflection.rotation) > 0 and no_reflection.residual > 0.1


def _cka_via_gram(x: np.ndarray, y: np.ndarray) -> float:
    """Independent linear CKA: HSIC with the centring matrix on n×n Gram matrices."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.sum(k * m) / np.sqrt(np.sum(k * k) * np.sum(m * m)))


def test_linear_cka_matches_an_independent_implementation_and_its_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    y = x[:, :10] @ rng.normal(size=(10, 15)) + 0.5 * rng.normal(size=(300, 15))
    assert linear_cka(x, y) == pytest.approx(_cka_via_gram(x, y), abs=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x @ q * 7.3 + 2.0, y) == pytest.approx(linear_cka(x, y), abs=1e-10)
    skew = x @ np.diag(np.linspace(0.1, 10, 20))  # an invertible but not orthogonal map
    assert abs(linear_cka(skew, y) - linear_cka(x, y)) > 1e-3
    m = cka_matrix([x, y], [y, x])
    assert m.shape == (2, 2) and m[0, 1] == pytest.approx(1.0) and m[0, 0] == pytest.approx(m[1, 1])
    big_x = rng.normal(size=(4000, 16))
    big_y = big_x @ rng.normal(size=(16, 8)) + rng.normal(size=(4000, 8))
    assert minibatch_cka(big_x, big_y, batch_size=500) == pytest.approx(linear_cka(big_x, big_y), abs=0.03)
    assert np.isnan(linear_cka(np.ones((10, 3)), x[:10]))


# --- task=compare_embeddings end to end --------------------------------------------------------
def _train_mae(out, steps: int):
    from selfsup_vis.tasks.common import run_task
    from tests.conftest import compose_cfg

    run_task(compose_cfg(["task=pretrain", "model=mae_tiny", f"trainer.max_steps={steps}", "callbacks=none",
                          "dataset.batch_size=8", "trainer.enable_progress_bar=false"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_compare_embeddings_two_checkpoints_end_to_end(tmp_path, monkeypatch):
    from selfsup_vis.tasks.common import run_task
    from tests.conftest import compose_cfg

    monkeypatch.setenv("SELFSUP_VIS_CACHE", str(tmp_path / "cache"))
    ckpts = [_train_mae(tmp_path / f"train{s}", s) for s in (2, 6)]
    assert all(c.is_file() for c in ckpts)
    out = tmp_path / "compare"
    cfg = compose_cfg(["task=compare_embeddings", "model=mae_tiny", f"task.checkpoints=[{ckpts[0]},{ckpts[1]}]",
                       "task.layers=[block1,norm]", "task.max_samples_per_class=10", "task.n_jobs=1",
                       "task.baselines=[pixels]", "logger=csv", "trainer.enable_progress_bar=false"], out)
    s = run_task(cfg)
    names = [m["name"] for m in s["models"]]
    assert names[2] == "raw pixels (baseline)" and names[0] != names[1] and len(names) == 3
    assert s["space"] == "cosine (L2-normalised)" and s["n_samples"] == 80
    # the headline (sweep tables, report.html, logger hparams): each model's panel map
    assert set(s["headline"]) == {f"{k}/{n}" for k in ("knn_feat@20", "knn_2d@20", "trustworthiness")
                                  for n in names}
    for f in ("compare_panels.png", "layer_curves.png", "layer_curves.csv", "summary.json"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "layer_curves.csv")))
    assert [(r["model"] == names[0], r["layer"]) for r in rows[:2]] == [(True, "block1"), (True, "norm")]
    assert all(0 <= float(r["knn_2d@10"]) <= 1 and 0 <= float(r["trustworthiness"]) <= 1 for r in rows)
    key = next(k for k, v in s["cka"].items() if v["rows_model"] == names[0] and v["cols_model"] == names[1])
    m = np.array(s["cka"][key]["matrix"])
    assert m.shape == (2, 2) and np.all((m > 0) & (m <= 1 + 1e-9))
    assert (out / f"cka_{key}.png").is_file() and (out / f"cka_{key}.csv").read_text().startswith("layer,block1,norm")
    # the panel maps are aligned onto the first model's: the first one is its own reference
    assert s["procrustes_rms"][names[0]]["norm"] < 1e-6
    coords = np.load(out / "embeddings" / next((out / "embeddings").iterdir()).name / "norm.npy")
    assert coords.shape == (80, 2) and np.isfinite(coords).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][0]["checkpoint"] == str(ckpts[0]) and "sha256" in summary["models"][0]["weights"]
    # a second comparison of the same checkpoints extracts nothing: the feature cache is shared
    s2 = run_task(compose_cfg(["task=compare_embeddings", "model=mae_tiny",
                               f"task.checkpoints=[{ckpts[1]},{ckpts[0]}]", "task.layers=[norm]",
                               "task.max_samples_per_class=10", "task.n_jobs=1", "task.backend=pca",
                               "task.cka=false"], tmp_path / "again"))
    assert s2["timings"]["extraction_s"] == 0.0


def test_compare_embeddings_refuses_bad_input_before_work(tmp_path):
    from selfsup_vis.tasks.common import run_task
    from tests.conftest import compose_cfg

    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.ckpt"):
        run_task(compose_cfg(["task=compare_embeddings", "task.checkpoints=[null,missing.ckpt]"], tmp_path))
    with pytest.raises(ValueError, match="at least two models"):
        run_task(compose_cfg(["task=compare_embeddings", "task.checkpoints=[null]"], tmp_path))
    with pytest.raises(Exception, match="mae_tinyy"):
        run_task(compose_cfg(["task=compare_embeddings", "task.models=[{model: mae_tinyy},{model: mae_tiny}]"],
                             tmp_path))


def test_compare_embeddings_takes_every_layer_by_default(tmp_path, monkeypatch):
    """No task.layers: every layer of the model (asked of a weightless build, so the real one
    gets its layers through its constructor), next to the raw-pixel baseline."""
    from selfsup_vis.models import build_model
    from selfsup_vis.tasks.common import run_task
    from tests.conftest import compose_cfg

    monkeypatch.setenv("SELFSUP_VIS_CACHE", str(tmp_path / "cache"))
    s = run_task(compose_cfg(["task=compare_embeddings", "model=mocov2_tiny", "task.checkpoints=[null]",
                              "task.baselines=[pixels]", "task.max_samples_per_class=6", "task.backend=pca",
                              "task.cka=false", "logger=none"], tmp_path / "out"))
    every = build_model(compose_cfg(["model=mocov2_tiny"]).model).available_layers()
    assert s["models"][0]["layers"] == every and s["models"][1]["layers"] == ["pixels"]
    assert set(s["quality"][s["models"][0]["name"]]) == set(every)
    assert s["models"][0]["weights"] == "random" and "RANDOM" in s["provenance"]["weights"].upper()
