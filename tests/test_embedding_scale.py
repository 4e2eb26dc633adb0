"""Issue 15: features from disk, the memory-bounded embedding path, sampled quality, big figures.

Small N throughout (timing lives in scripts/bench_scale.py); the 200k-point figure test only
draws, it embeds nothing.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sk_trustworthiness

from selfsup_vis.embedding import large
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding, pca_reduce
from selfsup_vis.embedding.plots import plot_embedding
from selfsup_vis.embedding.plots_large import density_rgba, point_style
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.sampled_quality import sampled_quality, trustworthiness_terms
from selfsup_vis.embedding.space import to_metric_space
from selfsup_vis.embedding.synthetic import make_clustered_features
from selfsup_vis.features.external import FeatureShards, load_labels
from selfsup_vis.report.html import REPORT_MAX_POINTS, _report_sample
from selfsup_vis.tasks.common import run_task


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_clustered_features(1500, dim=128, n_classes=8, seed=0)


def _write_shards(folder, x: np.ndarray, sizes: list[int]) -> None:
    folder.mkdir()
    start = 0
    for i, size in enumerate(sizes):  # shard_10 must come after shard_2 (natural order)
        np.save(folder / f"shard_{i * 4}.npy", x[start : start + size])
        start += size


# --- features from disk -------------------------------------------------------------------


def test_shards_read_rows_across_files_in_natural_order(tmp_path, blobs):
    x = blobs[0][:300]
    _write_shards(tmp_path / "f", x, [100, 50, 150])  # shard_0, shard_4, shard_8
    np.save(tmp_path / "f" / "shard_12.npy", np.zeros((0, 128), np.float32))  # empty shard: skipped
    src = FeatureShards(tmp_path / "f")
    assert src.shape == (300, 128) and [s.path.name for s in src.shards] == ["shard_0.npy", "shard_4.npy", "shard_8.npy"]
    np.testing.assert_array_equal(src[90:160], x[90:160])
    idx = np.array([299, 0, 101, 149, 150])
    np.testing.assert_array_equal(src.take(idx), x[idx])
    np.testing.assert_array_equal(src.load(), x)
    assert "shard_8.npy rows [0]" in src.locate(np.array([150]))


def test_shards_refuse_bad_files_naming_them(tmp_path):
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "x.npy", np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match=r"x\.npy holds int64"):
        FeatureShards(tmp_path / "a")
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "0.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "b" / "1.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"1\.npy has 5 columns"):
        FeatureShards(tmp_path / "b")
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "feats.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "c" / "labels.npy", np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="labels belong in task.labels"):
        FeatureShards(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FeatureShards(tmp_path / "missing.npy")


def test_labels_from_csv_npy_and_mismatches(tmp_path):
    (tmp_path / "l.csv").write_text("path,class\na.png,dog\nb.png,cat\nc.png,dog\n")
    lab = load_labels(tmp_path / "l.csv", 3)
    assert lab.classes == ["cat", "dog"] and lab.labels.tolist() == [1, 0, 1] and lab.paths == ["a.png", "b.png", "c.png"]
    with pytest.raises(ValueError, match=r"l\.csv has 3 labels but the features have 4 rows"):
        load_labels(tmp_path / "l.csv", 4)
    (tmp_path / "bad.csv").write_text("name,y\na,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv needs a header.*found columns \['name', 'y'\]"):
        load_labels(tmp_path / "bad.csv", 1)
    np.save(tmp_path / "y.npy", np.array([0, 2, 1]))
    lab = load_labels(tmp_path / "y.npy", 3, classes=["a", "b", "c"])
    assert lab.classes == ["a", "b", "c"] and lab.paths is None
    with pytest.raises(ValueError, match="2 names but labels go up to 2"):
        load_labels(tmp_path / "y.npy", 3, classes=["a", "b"])
    np.save(tmp_path / "f.npy", np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"f\.npy holds float64"):
        load_labels(tmp_path / "f.npy", 3)


def test_nan_rows_are_named_with_their_file(tmp_path, blobs):
    x = blobs[0][:300].copy()
    x[260, 5] = np.nan
    _write_shards(tmp_path / "f", x, [100, 200])
    src = FeatureShards(tmp_path / "f")
    with pytest.raises(ValueError, match=r"rows 260 of 300 \(.*shard_4\.npy rows \[160\]\)"):
        large.project_in_chunks(src, None, chunk_rows=64)


# --- the memory-bounded path against the in-memory one ------------------------------------


def test_chunked_pca_projection_matches_in_memory_pca(blobs):
    x = blobs[0]
    space = large.metric_space(x, "cosine", False)
    pca = large.fit_pca_on_sample(x, 30, seed=0, space=space)  # sample >= N: the same fit
    a = large.project_in_chunks(x, pca, chunk_rows=97, space=space)
    b = large.project_in_chunks(x, pca, chunk_rows=100_000, space=space)
    np.testing.assert_allclose(a, b, atol=1e-5)
    ref = pca_reduce(to_metric_space(x, "cosine"), 30, seed=0)
    np.testing.assert_allclose(np.abs(a), np.abs(ref), atol=1e-4)  # component signs may differ


def test_standardize_in_chunks_equals_in_memory(blobs):
    x = blobs[0][:400]
    space = large.metric_space(x, "cosine", True, chunk_rows=33)
    np.testing.assert_allclose(space(x.copy()), to_metric_space(x, "cosine", True), atol=1e-5)


@pytest.mark.slow
def test_large_path_quality_matches_in_memory_path(blobs):
    """Same algorithm (PCA → Annoy kNN → perplexity P → FFT t-SNE) with float32 chunks; the
    coordinates differ in round-off only, which t-SNE amplifies, so the test compares quality:
    trustworthiness and 2-D kNN@10 within 0.01."""
    x, y = blobs
    fast = {"n_iter": 150, "early_exaggeration_iter": 60, "n_jobs": 1}
    small = compute_embedding(x, EmbedParams(large_n=None, **fast))
    big = compute_embedding(x, EmbedParams(large_n=0, **fast))
    assert "large" not in small.params and big.params["large"]["path"].startswith("large")
    assert big.params["large"]["pca_sample"] == 1500 and big.params["large"]["k_neighbors"] == 90
    assert set(big.params["large"]["phases_s"]) == {"pca", "knn", "affinities", "optimisation"}
    qa = embedding_quality(x, small.coords, y)
    qb = embedding_quality(x, big.coords, y)
    for key in ("trustworthiness", "knn_2d@10"):
        assert abs(qa[key] - qb[key]) <= 0.01, (key, qa[key], qb[key])


@pytest.mark.slow
def test_large_path_reads_feature_shards_and_pca_sample(tmp_path, blobs):
    x, y = blobs
    _write_shards(tmp_path / "f", x, [700, 800])
    src = FeatureShards(tmp_path / "f")
    coords, info = large.embed_large(
        src, perplexity=20.0, seed=1, pca_dims=20, n_iter=100, early_exaggeration_iter=50,
        early_exaggeration=12.0, learning_rate="auto", init="pca", n_jobs=1, metric="cosine",
        pca_sample=500, chunk_rows=256,
    )  # fmt: skip
    assert coords.shape == (1500, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert info["pca_sample"] == 500 and info["k_neighbors"] == 60
    assert embedding_quality(x, coords, y)["knn_2d@10"] > 0.9


# --- quality on a subsample ---------------------------------------------------------------


def test_trustworthiness_terms_sum_to_sklearn():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(300, 20)), rng.normal(size=(300, 2))
    terms, const = trustworthiness_terms(x, c, 7)
    assert 1 - const * terms.sum() == pytest.approx(sk_trustworthiness(x, c, n_neighbors=7), abs=1e-12)


def test_sampled_quality_is_exact_when_the_sample_holds_everything(blobs):
    x, y = blobs[0][:600], blobs[1][:600]
    coords = x[:, :2] + np.random.default_rng(0).normal(size=(600, 2)).astype(np.float32)
    full = embedding_quality(x, coords, y)
    sampled = sampled_quality(x, coords, y, sample=600, n_boot=100)
    for key in ("knn_feat@10", "knn_2d@20", "trustworthiness", "silhouette_2d"):
        assert sampled[key] == pytest.approx(full[key], abs=1e-9), key
        lo, hi = sampled[f"{key}_ci95"]
        assert lo <= sampled[key] <= hi
    assert sampled["quality_subsample"]["note"] == "all points"


def test_sampled_quality_reports_its_subsample(blobs):
    x, y = blobs
    coords = x[:, :2].copy()
    q = sampled_quality(x, coords, y, sample=400, seed=3, n_boot=50)
    assert q["n"] == 1500 and q["quality_subsample"]["n"] == 400 and q["quality_subsample"]["seed"] == 3
    assert q["knn_feat_queries"] == 400 and "subsample" in q["quality_subsample"]["note"]
    assert q == sampled_quality(x, coords, y, sample=400, seed=3, n_boot=50)  # seeded


# --- figures at large N -------------------------------------------------------------------


def test_point_style_shrinks_with_n():
    (s1, a1), (s2, a2) = point_style(1000), point_style(1_000_000)
    assert s2 < s1 and a2 < a1 and a2 >= 0.25


def test_200k_point_figure_is_a_small_pdf_with_a_raster_layer():
    rng = np.random.default_rng(0)
    n = 200_000
    labels = rng.integers(0, 12, n)
    coords = (rng.normal(size=(n, 2)) + 6 * rng.normal(size=(12, 2))[labels]).astype(np.float32)
    for density in (False, True):
        fig = plot_embedding(coords, labels, [f"c{i}" for i in range(12)], "200k points", density=density)
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf", dpi=100)
        pdf = buf.getvalue()
        assert b"/Subtype /Image" in pdf, density  # the points are one raster image ...
        assert b"/Font" in pdf  # ... while title and legend stay vector text
        assert len(pdf) < 3_000_000, (density, len(pdf))


def test_density_image_mixes_class_colours():
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    img, extent = density_rgba(coords, np.array([0, 1, 1]), np.array([[1.0, 0, 0], [0, 0, 1.0]]), bins=4)
    assert img.shape == (4, 4, 4) and extent[0] < 0 < 1 < extent[1]
    assert np.allclose(img[0, 0, :3], [0.5, 0, 0.5]) and img[0, 0, 3] == pytest.approx(1.0)
    assert np.allclose(img[-1, -1, :3], [0, 0, 1]) and 0 < img[-1, -1, 3] < 1


# --- task.features end to end -------------------------------------------------------------


@pytest.mark.slow
def test_task_features_end_to_end_with_csv_labels(tmp_path, compose_in, blobs):
    x, y = blobs[0][:900], blobs[1][:900]
    _write_shards(tmp_path / "feats", x, [400, 500])
    names = [f"cls{c}" for c in range(8)]
    (tmp_path / "labels.csv").write_text(
        "path,label,class\n" + "".join(f"img{i}.jpg,{c},{names[c]}\n" for i, c in enumerate(y)))
    cfg = compose_in(["task=tsne", f"task.features={tmp_path / 'feats'}", f"task.labels={tmp_path / 'labels.csv'}",
                      "task.large_n=500", "task.quality_sample=600", "task.n_iter=150", "task.n_jobs=1",
                      "task.formats=[png,pdf]", "logger=none"])
    summary = run_task(cfg)
    out = tmp_path
    saved = json.loads((out / "summary.json").read_text())
    assert saved["n_samples"] == 900 and saved["classes"] == names and saved["model"] == "precomputed features"
    info = saved["layers"]["feats"]
    assert info["embedding"]["large"]["path"].startswith("large")  # 900 >= task.large_n
    q = info["quality"]
    assert q["quality_subsample"]["n"] == 600 and len(q["knn_2d@10_ci95"]) == 2
    assert q["knn_feat@10"] > 0.8 and q["knn_2d@10"] > 0.8
    assert saved["projector"]["n"] == 900 and np.load(out / "projector_sample.npy").shape == (900,)
    coords = np.load(out / "embedding_feats.npy")
    assert coords.shape == (900, 2)
    rows = (out / "embedding_feats.csv").read_text().splitlines()
    assert rows[0] == "path,label,class,x,y" and rows[1].startswith(f"img0.jpg,{y[0]},{names[y[0]]},")
    assert (out / "tsne_feats.png").stat().st_size > 10_000 and (out / "tsne_feats.pdf").is_file()
    assert summary["provenance"]["sources"][0].endswith("feats")


def test_task_features_refuses_mismatched_labels_before_work(tmp_path, compose_in):
    np.save(tmp_path / "x.npy", np.ones((10, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(9, np.int64))
    cfg = compose_in(["task=tsne", f"task.features={tmp_path / 'x.npy'}", f"task.labels={tmp_path / 'y.npy'}",
                      "logger=none"])
    with pytest.raises(ValueError, match=r"y\.npy has 9 labels but the features have 10 rows"):
        run_task(cfg)
    assert not list(tmp_path.glob("embedding_*"))


def test_report_shows_a_seeded_sample_of_large_runs():
    assert _report_sample({"n_samples": 1000, "seed": 0}) is None
    rows = _report_sample({"n_samples": REPORT_MAX_POINTS + 10, "seed": 2})
    assert rows.size == REPORT_MAX_POINTS and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, _report_sample({"n_samples": REPORT_MAX_POINTS + 10, "seed": 2}))


# --- optimise a seeded sample, place the rest (task.embed_sample) ---------------------------


@pytest.fixture(scope="module")
def mixture6k() -> tuple[np.ndarray, np.ndarray]:
    return make_clustered_features(6000, dim=128, n_classes=20, seed=0)


@pytest.mark.slow
def test_sample_and_place_against_the_full_large_path(mixture6k):
    """N = 6000, embed_sample = 2000: a third of the points is optimised, two thirds placed.
    Tolerance against optimising all 6000 on the same path (measured: trust 0.9892 → 0.9818,
    2-D kNN@10 0.9675 → 0.9163; placed points 0.899, optimised 0.952 — at this ratio the
    optimised map has 100 points per class): trustworthiness within 0.02, 2-D kNN@10 within
    0.08; the placed points' own kNN accuracy within 0.08 of the optimised points'."""
    x, y = mixture6k
    fast = {"n_iter": 150, "early_exaggeration_iter": 60, "n_jobs": 1}
    full = compute_embedding(x, EmbedParams(large_n=0, embed_sample=None, **fast))
    part = compute_embedding(x, EmbedParams(large_n=0, embed_sample=2000, **fast))
    info = part.params["large"]
    assert "placed_n" not in full.params["large"]
    assert (info["optimised_n"], info["placed_n"], info["k_place"]) == (2000, 4000, large.K_PLACE)
    assert info["placement"].startswith("median of the k nearest optimised points")
    assert info["affinity_nnz"] < full.params["large"]["affinity_nnz"] / 2  # P over the sample only
    assert {"knn of placed rows", "placement"} <= set(info["phases_s"])
    qa, qb = embedding_quality(x, full.coords, y), embedding_quality(x, part.coords, y)
    assert abs(qa["trustworthiness"] - qb["trustworthiness"]) <= 0.02, (qa["trustworthiness"], qb["trustworthiness"])
    assert abs(qa["knn_2d@10"] - qb["knn_2d@10"]) <= 0.08, (qa["knn_2d@10"], qb["knn_2d@10"])
    mask = large.optimised_mask(6000, info)
    assert mask.sum() == 2000 and np.array_equal(np.flatnonzero(mask), large.sample_indices(6000, 2000, 0, 1))
    q = sampled_quality(x, part.coords, y, sample=6000, optimised=mask, n_boot=50)
    assert q["placement_split"]["placed"] == 4000 and q["knn_2d@10"] == pytest.approx(qb["knn_2d@10"])
    assert q["knn_2d@10_placed"] > q["knn_2d@10_optimised"] - 0.08
    assert q["knn_2d@10"] == pytest.approx((2000 * q["knn_2d@10_optimised"] + 4000 * q["knn_2d@10_placed"]) / 6000)
    # placed points sit among the optimised ones (a median of optimised coordinates + tiny jitter)
    opt, placed = part.coords[mask], part.coords[~mask]
    lo, hi = opt.min(axis=0), opt.max(axis=0)
    slack = 0.01 * (hi - lo)
    assert np.all(placed >= lo - slack) and np.all(placed <= hi + slack)
    assert np.unique(placed, axis=0).shape[0] == placed.shape[0]  # the jitter: none stacked exactly


def test_place_points_is_openTSNE_median_plus_seeded_jitter():
    from openTSNE import initialization

    rng = np.random.default_rng(0)
    opt = rng.normal(size=(500, 2)).astype(np.float32) * 10
    nb = rng.integers(0, 500, size=(300, 7))
    a = large.place_points(opt, nb, seed=3, jitter=0.0, chunk_rows=64)
    np.testing.assert_allclose(a, initialization.median(opt.astype(np.float64), nb), rtol=1e-6)
    b = large.place_points(opt, nb, seed=3)
    assert np.array_equal(b, large.place_points(opt, nb, seed=3))  # seeded
    assert 0 < np.abs(b - a).max() < 0.1 and np.std(b - a) == pytest.approx(large.PLACE_JITTER * np.std(opt[:, 0]), rel=0.2)


def test_knn_graph_equals_openTSNE_annoy_build(blobs):
    """Our threaded neighbour loop over openTSNE's Annoy trees gives openTSNE's graph."""
    from openTSNE import nearest_neighbors

    reduced = blobs[0][:, :20].copy()
    for n_jobs in (1, 2):  # (Annoy's trees depend on the number of build threads)
        ours, ours_d = large.knn_graph(reduced, 30, n_trees=5, seed=4, n_jobs=n_jobs)
        theirs, theirs_d = nearest_neighbors.Annoy(reduced, 30, metric="euclidean", n_jobs=n_jobs, random_state=4,
                                                   knn_kwargs={"n_trees": 5}).build()
        assert ours.dtype == np.int32 and ours_d.dtype == np.float32
        assert np.array_equal(ours, theirs) and np.allclose(ours_d, theirs_d, rtol=1e-5)


def test_query_in_chunks_matches_openTSNE_query(blobs):
    reduced = blobs[0][:, :20].copy()
    idx = large.knn_index(reduced[:1000], 15, n_trees=10, seed=0, n_jobs=1)
    idx.build()
    rows = np.arange(1000, 1500)
    ours = large.query_in_chunks(idx, reduced, rows, 5, n_jobs=2, chunk_rows=77)
    theirs = idx.query(reduced[rows].astype(np.float64), 5)[0]
    assert np.array_equal(ours, theirs)  # Annoy's default search: openTSNE's neighbours
    from sklearn.neighbors import NearestNeighbors

    exact = NearestNeighbors(n_neighbors=5).fit(reduced[:1000]).kneighbors(reduced[rows], return_distance=False)
    wide = large.query_in_chunks(idx, reduced, rows, 5, n_jobs=1, search_k=1000)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, exact)]))

    assert recall(wide) >= recall(ours) and recall(wide) > 0.9


def test_quality_subsample_is_independent_of_the_optimised_rows():
    """Seeded samples of different sizes from one seed are nested in numpy; the optimised rows
    take their own stream, so the quality subsample holds placed points in proportion."""
    n = 200_000
    info = {"placed_n": 150_000, "embed_sample": 50_000, "optimised_rows_seed": [0, large.OPTIMISED_STREAM]}
    mask = large.optimised_mask(n, info)
    rng = np.random.default_rng(0)  # sampled_quality's draw of a 20 000-point subsample
    sub = np.sort(rng.choice(n, size=20_000, replace=False))
    assert 0.22 < mask[sub].mean() < 0.28  # 50k of 200k optimised: a quarter
    assert mask[large.sample_indices(n, 20_000, 0)].mean() < 0.28  # (without the stream: 1.0)


def test_embed_sample_is_checked_at_compose_time(compose_in):
    from selfsup_vis.config.validate import ConfigError, validate
    from selfsup_vis.embedding.large import EMBED_SAMPLE

    cfg = compose_in(["task=tsne"])
    assert cfg.task.embed_sample == EMBED_SAMPLE  # the schema's default is large.EMBED_SAMPLE
    with pytest.raises(ConfigError, match=r"task\.embed_sample=999: must be >= 1000"):
        validate(compose_in(["task=tsne", "task.embed_sample=999"]))
    validate(compose_in(["task=tsne", "task.embed_sample=null"]))  # null: optimise every point
    with pytest.raises(Exception, match="embed_sample"):
        compose_in(["task=tsne", "task.embed_sample=many"])


@pytest.mark.slow
def test_task_features_records_and_shows_placement(tmp_path, compose_in, mixture6k, caplog):
    import matplotlib

    x, y = mixture6k[0][:2500], mixture6k[1][:2500]
    np.save(tmp_path / "feats.npy", x)
    np.save(tmp_path / "labels.npy", y)
    cfg = compose_in(["task=tsne", f"task.features={tmp_path / 'feats.npy'}", f"task.labels={tmp_path / 'labels.npy'}",
                      "task.large_n=0", "task.embed_sample=1000", "task.quality_sample=1200", "task.n_iter=100", "task.n_jobs=1",
                      "task.formats=[png,svg]", "task.projector=false", "logger=none"])
    with matplotlib.rc_context({"svg.fonttype": "none"}), caplog.at_level("WARNING"):
        run_task(cfg)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "placed" in r.getMessage()]
    assert len(warned) == 1 and "1000 of 2500 points; the other 1500 were placed" in warned[0]
    saved = json.loads((tmp_path / "summary.json").read_text())
    info = saved["layers"]["feats"]
    big = info["embedding"]["large"]
    assert (big["optimised_n"], big["placed_n"], big["k_place"]) == (1000, 1500, large.K_PLACE)
    assert "median" in big["placement"] and info["embedding"]["embed_sample"] == 1000
    rows = np.load(big["optimised_rows_file"])
    assert rows.shape == (1000,) and np.array_equal(rows, large.sample_indices(2500, 1000, 0, large.OPTIMISED_STREAM))
    q = info["quality"]  # a subsample drawn over all 2500 points, split by placed / optimised
    split = q["placement_split"]
    assert q["quality_subsample"]["n"] == 1200 and split["optimised"] + split["placed"] == 1200
    assert 0.5 < split["placed"] / 1200 < 0.7  # 1500 of 2500 were placed
    assert 0.5 < q["knn_2d@10_placed"] <= 1 and 0.5 < q["knn_2d@10_optimised"] <= 1
    svg = (tmp_path / "tsne_feats.svg").read_text()
    assert "optimised on a seeded sample of 1,000 of 2,500 points, 1,500 placed at the median" in svg
    assert f"placed {q['knn_2d@10_placed']:.3f}" in svg
