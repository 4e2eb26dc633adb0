"""Quality numbers of a large embedding, measured on a seeded subsample with bootstrap intervals.

At N = 10^6 the exact numbers of ``embedding.quality`` would need the whole feature matrix in
memory and an N × N neighbour search. Here the same numbers are computed on a seeded
subsample of ``sample`` rows (only those rows are read from the features): kNN accuracy in
feature space and in 2-D *among the subsample's points*, trustworthiness (sklearn's formula,
k = 10) and the 2-D silhouette on at most 5000 of them. Every number is a mean of per-point
terms, so a percentile bootstrap over the points gives its 95 % interval (``<key>_ci95``).
Note that kNN accuracy within a subsample is not the full-N kNN accuracy (the neighbours are
sparser); the dict says so (``quality_subsample``), and a run at small N with
``sample >= N`` gives exactly the full-N numbers.

When only a sample was optimised and the other points were placed (``embedding.large``,
``task.embed_sample``), the subsample is still drawn over all N (placed and optimised points
together) and ``optimised`` (a boolean mask) adds the 2-D kNN accuracy of the placed points
alone and of the optimised points alone (``knn_2d@k_placed`` / ``knn_2d@k_optimised``), so a
user sees whether placement costs accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances, silhouette_samples
from sklearn.neighbors import NearestNeighbors

from selfsup_vis.embedding.quality import KNN_KS, MAX_SUBSAMPLE, TRUST_K, knn_neighbours, knn_vote
from selfsup_vis.embedding.space import describe_space, to_metric_space

QUALITY_SAMPLE = 20_000  # rows the numbers are computed on (task.quality_sample)
BOOTSTRAP = 1000
FEATURE_PCA = 128  # as embedding_quality: PCA-128 above 256 dimensions and 10 000 points
EXACT_MAX_DIM, EXACT_MAX_N = 256, 10_000


def _rows(features: Any, idx: np.ndarray) -> np.ndarray:
    if hasattr(features, "take") and not isinstance(features, np.ndarray):
        return np.asarray(features.take(idx), dtype=np.float32)
    return np.asarray(features[idx], dtype=np.float32)


def trustworthiness_terms(x: np.ndarray, coords: np.ndarray, k: int = TRUST_K) -> tuple[np.ndarray, float]:
    """Per-point penalties ``t_i`` and the constant ``c`` of sklearn's trustworthiness, so
    that ``1 - c * t.sum()`` equals ``sklearn.manifold.trustworthiness(x, coords, k)``."""
    n = x.shape[0]
    dist = pairwise_distances(x)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1)
    del dist
    nb_2d = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors(return_distance=False)
    inverted = np.zeros((n, n), dtype=np.int32)
    rows = np.arange(n)[:, None]
    inverted[rows, order] = np.arange(1, n + 1)[None, :]
    ranks = inverted[rows, nb_2d].astype(np.int64) - k
    terms = np.where(ranks > 0, ranks, 0).sum(axis=1).astype(np.float64)
    return terms, 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def _interval(values: np.ndarray, rng: np.random.Generator, n_boot: int,
              stat=np.mean) -> list[float]:
    """95 % percentile bootstrap interval of ``stat`` over the points. For 0/1 values (kNN
    hits) the mean of a resample is Binomial(m, p) / m exactly, drawn without the resamples."""
    if values.size < 2:
        return [float("nan"), float("nan")]
    if stat is np.mean and np.isin(values, (0.0, 1.0)).all():
        boot = rng.binomial(values.size, float(values.mean()), size=n_boot) / values.size
    else:
        draws = rng.integers(0, values.size, size=(n_boot, values.size))
        boot = np.array([stat(values[d]) for d in draws])
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def _split_by_placement(correct: dict[int, np.ndarray], optimised: np.ndarray,
                        rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    """2-D kNN accuracy of the subsample's placed and optimised points separately."""
    out: dict[str, Any] = {}
    for k, hits in correct.items():
        for tag, sel in (("optimised", optimised), ("placed", ~optimised)):
            if sel.any():
                out[f"knn_2d@{k}_{tag}"] = float(hits[sel].mean())
                out[f"knn_2d@{k}_{tag}_ci95"] = _interval(hits[sel], rng, n_boot)
    out["placement_split"] = {"optimised": int(optimised.sum()), "placed": int((~optimised).sum()),
                              "note": "2-D kNN of the subsample's points by how they got their "
                                      "coordinates (neighbours among all subsample points)"}
    return out


def _subsample(n: int, sample: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))


def placement_knn(coords: np.ndarray, labels: np.ndarray, optimised: np.ndarray, *, seed: int = 0,
                  sample: int = QUALITY_SAMPLE, ks: tuple[int, ...] = KNN_KS,
                  n_boot: int = BOOTSTRAP) -> dict[str, Any]:
    """Only the placed-vs-optimised 2-D kNN numbers of :func:`sampled_quality` (same seeded
    subsample, same keys), for callers whose other numbers come from ``embedding_quality``."""
    coords = np.asarray(coords, dtype=np.float32)
    idx = _subsample(coords.shape[0], sample, np.random.default_rng(seed))
    lab = np.asarray(labels)[idx]
    ks_m = tuple(k for k in ks if k < idx.size)
    if not ks_m:
        return {}
    nb = knn_neighbours(coords[idx], max(ks_m))
    hits = {k: (knn_vote(lab[nb[:, :k]]) == lab).astype(np.float64) for k in ks_m}
    return _split_by_placement(hits, np.asarray(optimised, dtype=bool)[idx], np.random.default_rng(seed + 1), n_boot)


def sampled_quality(
    features: Any,
    coords: np.ndarray,
    labels: np.ndarray | None,
    *,
    seed: int = 0,
    sample: int = QUALITY_SAMPLE,
    ks: tuple[int, ...] = KNN_KS,
    trust_k: int = TRUST_K,
    max_trust: int = MAX_SUBSAMPLE,
    n_boot: int = BOOTSTRAP,
    metric: str = "cosine",
    standardize: bool = False,
    optimised: np.ndarray | None = None,
) -> dict[str, Any]:
    """The keys of ``embedding_quality`` (``knn_feat@k``, ``knn_2d@k``, ``trustworthiness``,
    ``silhouette_2d``, ``n``, ``n_classes``, ``knn_feat_space``) on a seeded subsample, plus
    ``<key>_ci95`` intervals and ``quality_subsample`` (size, seed, resamples, what it means).

    ``features`` may be an array, a memmap or ``FeatureShards`` (only sampled rows are read).
    ``standardize`` uses the subsample's statistics (an approximation of the full-N ones).
    ``optimised``: (N,) bool, True where the t-SNE optimised the point (False: placed); adds
    ``knn_2d@k_placed`` / ``knn_2d@k_optimised`` and ``placement_split``.
    """
    coords = np.asarray(coords, dtype=np.float32)
    n = coords.shape[0]
    if len(features) != n or (labels is not None and len(labels) != n) or (
            optimised is not None and len(optimised) != n):
        raise ValueError(f"sampled_quality: features ({len(features)}), coords ({n}), labels "
                         f"({None if labels is None else len(labels)}) and the optimised mask "
                         f"({None if optimised is None else len(optimised)}) must describe the same samples")
    rng = np.random.default_rng(seed)
    idx = _subsample(n, sample, rng)
    m = idx.size
    x = to_metric_space(_rows(features, idx), metric, standardize)
    xy = coords[idx]
    out: dict[str, Any] = {"n": int(n)}
    boot_rng = np.random.default_rng(seed + 1)
    ks_m = tuple(k for k in ks if k < m)
    if labels is not None and ks_m:
        lab = np.asarray(labels)[idx]
        out["n_classes"] = int(np.unique(np.asarray(labels)).size)
        space = describe_space(metric, standardize)
        xr = x
        if x.shape[1] > EXACT_MAX_DIM and m > EXACT_MAX_N:
            # two power iterations as the embedding's own PCA (sklearn's auto: 7, ~4x the time)
            xr = PCA(FEATURE_PCA, svd_solver="randomized", iterated_power=2, random_state=seed).fit_transform(x)
            space = f"{space[:-1]}, PCA-{FEATURE_PCA})"
        hits_2d: dict[int, np.ndarray] = {}
        for tag, points in (("feat", xr), ("2d", xy)):
            nb = knn_neighbours(points, max(ks_m))
            for k in ks_m:
                correct = (knn_vote(lab[nb[:, :k]]) == lab).astype(np.float64)
                out[f"knn_{tag}@{k}"] = float(correct.mean())
                out[f"knn_{tag}@{k}_ci95"] = _interval(correct, boot_rng, n_boot)
                if tag == "2d":
                    hits_2d[k] = correct
        if optimised is not None:
            out.update(_split_by_placement(hits_2d, np.asarray(optimised, dtype=bool)[idx], boot_rng, n_boot))
        out["knn_feat_space"] = space
        out["knn_feat_queries"] = int(m)
    t_idx = np.arange(m) if m <= max_trust else np.sort(rng.choice(m, size=max_trust, replace=False))
    k_t = min(trust_k, (t_idx.size - 1) // 2)
    if k_t >= 1:
        terms, c = trustworthiness_terms(x[t_idx], xy[t_idx], k_t)
        out["trustworthiness"] = float(1.0 - c * terms.sum())
        lo, hi = _interval(terms, boot_rng, n_boot)
        out["trustworthiness_ci95"] = [float(1.0 - c * hi * terms.size), float(1.0 - c * lo * terms.size)]
    if labels is not None:
        sub = np.asarray(labels)[idx][t_idx]
        if 2 <= np.unique(sub).size < sub.size:
            sil = silhouette_samples(xy[t_idx], sub)
            out["silhouette_2d"] = float(sil.mean())
            out["silhouette_2d_ci95"] = _interval(sil, boot_rng, n_boot)
    out["quality_subsample"] = {
        "n": int(m), "of": int(n), "seed": int(seed), "trust_points": int(t_idx.size),
        "bootstrap_resamples": int(n_boot),
        "note": ("numbers on a seeded subsample (kNN among the subsample's points); "
                 "*_ci95: 95% percentile bootstrap over points") if m < n else "all points",
    }
    return out
