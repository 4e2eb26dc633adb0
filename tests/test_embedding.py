"""Embedding core: backends, quality numbers, plots (tiny data, fast)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure

from selfsup_vis.embedding.backends import (
    EmbeddingWarning,
    EmbedParams,
    compute_embedding,
    effective_perplexity,
    resolve_backend,
)
from selfsup_vis.embedding.plots import (
    class_colors,
    class_markers,
    plot_embedding,
    plot_embedding_grid,
)
from selfsup_vis.embedding.quality import (
    embedding_quality,
    knn_accuracy,
    knn_vote,
    trustworthiness,
)
from selfsup_vis.embedding.synthetic import make_clustered_features


def embed(features: np.ndarray, backend: str = "auto", **kw) -> np.ndarray:
    """The coordinates alone (what these tests compare); keywords that are no EmbedParams
    field go to the backend (``EmbedParams.extra``)."""
    from dataclasses import fields

    own = {f.name for f in fields(EmbedParams)}
    params = EmbedParams(backend=backend, **{k: v for k, v in kw.items() if k in own},
                         extra={k: v for k, v in kw.items() if k not in own})
    return compute_embedding(features, params).coords


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_clustered_features(300, dim=64, n_classes=6, n_superclasses=3, seed=1)


# --- backends -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sklearn", "opentsne", "pca"])
def test_backend_shape_finite_and_seeded(backend, data):
    x = data[0][:150]
    kw = {"n_iter": 250} if backend != "pca" else {}
    if backend == "opentsne":
        pytest.importorskip("openTSNE")
        kw = {"n_iter": 100, "early_exaggeration_iter": 50}
    a = embed(x, backend, seed=3, n_jobs=1, **kw)
    b = embed(x, backend, seed=3, n_jobs=1, **kw)
    assert a.shape == (len(x), 2)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_opentsne_large_path_seeded():
    """Above 1000 points the default annoy + FFT path is used; it must be seeded too."""
    pytest.importorskip("openTSNE")
    x, _ = make_clustered_features(1100, dim=32, n_classes=5, seed=0)
    kw = {"n_iter": 30, "early_exaggeration_iter": 20, "n_jobs": 2, "seed": 7}
    a = compute_embedding(x, EmbedParams(backend="opentsne", **kw))
    b = embed(x, "opentsne", **kw)
    assert a.params["extra"]["negative_gradient_method"] == "fft"
    np.testing.assert_array_equal(a.coords, b)


@pytest.mark.slow  # numba compiles UMAP on first use (~10 s)
def test_umap_backend(data):
    pytest.importorskip("umap")
    x, _ = data
    y = embed(x[:100], "umap", seed=0, n_iter=50)
    assert y.shape == (100, 2) and np.isfinite(y).all()


@pytest.mark.slow
def test_sklearn_uses_mmselfsup_settings(data):
    x, _ = data
    res = compute_embedding(x[:100], EmbedParams(backend="sklearn", n_iter=250))
    p = res.params
    assert p["learning_rate"] == 200.0 and p["init"] == "random"
    assert p["perplexity"] == 30.0 and p["early_exaggeration"] == 12.0
    assert p["pca_dims"] is None


def test_auto_backend_and_unknown():
    assert resolve_backend("auto") in ("opentsne", "sklearn")
    with pytest.raises(ValueError, match="unknown embedding backend 'tsnecuda'"):
        resolve_backend("tsnecuda")


def test_umap_missing_names_extra(monkeypatch):
    import selfsup_vis.embedding.backends as b

    monkeypatch.setattr(b, "has_umap", lambda: False)
    with pytest.raises(ImportError, match=r"fast"):
        b.resolve_backend("umap")


def test_opentsne_missing_falls_back(monkeypatch):
    import selfsup_vis.embedding.backends as b

    monkeypatch.setattr(b, "has_opentsne", lambda: False)
    assert b.resolve_backend("auto") == "sklearn"
    with pytest.warns(EmbeddingWarning, match="falling back to sklearn"):
        assert b.resolve_backend("opentsne") == "sklearn"


def test_perplexity_lowered_with_warning():
    x = np.random.default_rng(0).normal(size=(40, 5))
    with pytest.warns(EmbeddingWarning, match="perplexity 13"):
        res = compute_embedding(x, EmbedParams(backend="sklearn", n_iter=250))
    assert res.params["perplexity"] == pytest.approx(13.0)
    assert res.coords.shape == (40, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_perplexity(91, 30) == 30.0


def test_too_few_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        embed(np.zeros((3, 5)), "sklearn")


def test_nan_features_error_names_rows():
    x = np.random.default_rng(0).normal(size=(50, 4))
    x[7, 1] = np.nan
    x[31, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 of 50 rows \(row indices: 7, 31\)"):
        embed(x, "pca")


def test_bad_shape():
    with pytest.raises(ValueError, match=r"2-D array"):
        embed(np.zeros(10), "pca")


# --- quality --------------------------------------------------------------------------------


def test_knn_accuracy_hand_made():
    # 1-D points: two tight groups plus one point of class 1 inside class 0's group
    pts = np.array([[0.0], [0.1], [0.2], [0.3], [10.0], [10.1], [10.2], [0.15]])
    lab = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # k=3 leave-one-out: indices 0-3 get three class-0/1 neighbours among {0..3, 7}
    # 0: nbrs 1, 7, 2 -> 0 (2 of 3) ok; 1: 7, 2, 0 -> 0 ok; 2: 7, 1, 3 -> 0 ok;
    # 3: 2, 7, 1 -> 0 ok; 4: 5, 6, 3 -> 1 ok; 5, 6 likewise ok;
    # 7: 1, 2, 0 -> 0 wrong  => 7/8
    acc = knn_accuracy(pts, lab, (3,))
    assert acc == {3: 7 / 8}
    # k=1: 1 -> 7 and 2 -> 7 wrong (7 sits between them), 7 -> 1 wrong; others ok => 5/8
    assert knn_accuracy(pts, lab, (1,))[1] == 5 / 8


def test_knn_vote_tie_goes_to_nearest():
    assert knn_vote(np.array([[2, 1, 1, 2]])).tolist() == [2]
    assert knn_vote(np.array([[1, 2, 2, 1]])).tolist() == [1]
    assert knn_vote(np.array([[3, 1, 1, 2]])).tolist() == [1]


def test_knn_excludes_self_with_duplicates():
    pts = np.array([[0.0], [0.0], [5.0], [5.0]])
    lab = np.array([0, 1, 1, 1])
    # each point's only 1-NN is its duplicate: 0<->1 disagree, 2<->3 agree
    assert knn_accuracy(pts, lab, (1,))[1] == 0.5


def test_trustworthiness_perfect_embedding():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(200, 2))
    feats = np.concatenate([coords, np.zeros((200, 8))], axis=1)  # same distances
    assert trustworthiness(feats, coords, k=10) == pytest.approx(1.0)


def test_embedding_quality_keys(data):
    x, y = data
    coords = embed(x, "pca")
    q = embedding_quality(x, coords, y, seed=0)
    for key in ("knn_feat@10", "knn_feat@20", "knn_2d@10", "knn_2d@20", "trustworthiness"):
        assert 0.0 <= q[key] <= 1.0, key
    assert -1.0 <= q["silhouette_2d"] <= 1.0
    assert q["n"] == len(x) and q["n_classes"] == 6
    assert q["knn_feat@10"] > 0.8  # the synthetic classes are mostly separable
    assert embedding_quality(x, coords, y, seed=0) == q  # deterministic
    assert set(embedding_quality(x, coords, None, seed=0)) == {"n", "trustworthiness"}


def test_embedding_quality_pca_path_and_subsample():
    x, y = make_clustered_features(400, dim=64, n_classes=4, seed=2)
    q = embedding_quality(
        x, x[:, :2], y, seed=0, exact_max_dim=16, exact_max_n=100, feature_pca_dims=8,
        max_queries=150, max_subsample=120,
    )  # fmt: skip
    assert q["knn_feat_space"] == "cosine (L2-normalised, PCA-8)"
    assert q["knn_feat_queries"] == 150


def test_embedding_quality_mismatch():
    with pytest.raises(ValueError, match="coords has 5 rows, expected 6"):
        embedding_quality(np.zeros((6, 3)), np.zeros((5, 2)), None)


# --- plots ----------------------------------------------------------------------------------


def test_palette_distinct_beyond_20():
    for n in (5, 20, 21, 60, 100, 257):
        c = class_colors(n)
        assert c.shape == (n, 3)
        assert len({tuple(np.round(row, 3)) for row in c}) == n
        assert ((c >= 0) & (c <= 1)).all()
    assert set(class_markers(20)) == {"o"}
    assert len(set(class_markers(30))) > 1


@pytest.mark.parametrize("n_classes", [4, 25, 40])
def test_plot_embedding_figure_saves(tmp_path, n_classes):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(200, 2))
    labels = np.arange(200) % n_classes
    names = [f"class_{i}" for i in range(n_classes)]
    q = {"knn_feat@10": 0.9, "knn_2d@10": 0.8, "trustworthiness": 0.95, "silhouette_2d": 0.1}
    fig = plot_embedding(coords, labels, names, "layer3", q)
    assert isinstance(fig, Figure)
    out = tmp_path / f"emb{n_classes}.png"
    fig.savefig(out)
    assert out.stat().st_size > 1000


def test_plot_embedding_grid(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    layers = [(f"stage{i}", rng.normal(size=(120, 2))) for i in range(5)]
    quality = {"stage0": {"knn_2d@10": 0.5, "trustworthiness": 0.9}}
    fig = plot_embedding_grid(layers, labels, ["a", "b", "c"], quality)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="layer 'bad' has 3 points"):
        plot_embedding_grid([("ok", np.zeros((4, 2))), ("bad", np.zeros((3, 2)))], None)


def test_embed_params_defaults_and_config_come_from_the_schema(compose_in):
    """Perplexity and every other embedding knob are written once, in the typed schema:
    EmbedParams' defaults are the schema's, and a task node becomes EmbedParams directly."""
    from dataclasses import fields

    from selfsup_vis.config.schemas import EmbeddingConfig, TsneTaskConfig

    p = EmbedParams()
    for name in ("perplexity", "early_exaggeration", "n_iter", "learning_rate", "pca_dims", "n_jobs",
                 "standardize"):
        assert getattr(p, name) == getattr(EmbeddingConfig, name), name
    assert (p.backend, p.metric) == (EmbeddingConfig.backend.value, EmbeddingConfig.metric.value)
    assert (p.large_n, p.embed_sample) == (TsneTaskConfig.large_n, TsneTaskConfig.embed_sample)
    t = compose_in(["task=tsne", "task.perplexity=7", "task.metric=euclidean", "task.init=random",
                    "task.backend=pca"]).task
    q = EmbedParams.from_config(t, init=t.init)
    assert (q.perplexity, q.metric, q.init, q.backend) == (7.0, "euclidean", "random", "pca")
    assert all(not hasattr(getattr(q, f.name), "value") for f in fields(q))  # plain values, no enums
    init = np.zeros((5, 2), np.float32)  # a shared initialisation goes in through the constructor
    assert EmbedParams.from_config(compose_in(["task=compare_embeddings"]).task, init=init).init is init


def test_feature_set_refuses_nonfinite_rows_naming_layer_rows_and_samples(tmp_path):
    from selfsup_vis.features.pipeline import FeatureSet, nonfinite_rows

    good = np.ones((20_000, 3), np.float32)
    bad = good.copy()
    bad[[3, 19_999]] = np.nan  # the second one in a later chunk
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "bad.npy", bad)
    assert nonfinite_rows(np.load(tmp_path / "bad.npy", mmap_mode="r")).tolist() == [3, 19_999]
    names = [f"img{i}" for i in range(20_000)]
    fs = FeatureSet.open("m", {"ok": tmp_path / "good.npy"}, names)
    assert fs.layers == ["ok"] and fs.array("ok").shape == (20_000, 3)
    with pytest.raises(ValueError, match=r"layer 'b' of m: .* 2 of 20000 rows \(row indices: 3, 19999; "
                                         r"first samples: img3, img19999\)"):
        FeatureSet.open("m", {"ok": tmp_path / "good.npy", "b": tmp_path / "bad.npy"}, names)
