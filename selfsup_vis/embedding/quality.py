"""Numbers that say how good a 2-D embedding is, computed next to every t-SNE picture.

- ``knn_feat@k``: leave-one-out kNN accuracy in feature space. Cosine similarity on
  L2-normalised features (the usual choice for self-supervised features, as in the kNN
  monitors of DINO / MoCo); above ``exact_max_dim`` dimensions and ``exact_max_n`` points the
  normalised features are first PCA-reduced, and at most ``max_queries`` seeded query points
  are classified (their neighbours are searched among all points). The dict says which.
- ``knn_2d@k``: the same leave-one-out kNN accuracy on the 2-D coordinates (euclidean, all
  points). The gap to ``knn_feat@k`` is the class structure the picture loses.
- ``trustworthiness``: sklearn's trustworthiness (k=10) between the raw features (euclidean,
  the space t-SNE embeds) and the coordinates, on a seeded subsample of at most 5000 points.
- ``silhouette_2d``: silhouette score of the labels in 2-D, on the same kind of subsample.

kNN votes are unweighted majority votes of the k nearest other points (the point itself is
excluded, also when it has exact duplicates); ties go to the tied class whose member is
nearest.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness as _sk_trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

KNN_KS: tuple[int, ...] = (10, 20)
TRUST_K = 10
MAX_SUBSAMPLE = 5000


def _check_inputs(
    features: np.ndarray | None, coords: np.ndarray | None, labels: np.ndarray | None
) -> int:
    n = None
    for name, arr, ndim in (
        ("features", features, 2),
        ("coords", coords, 2),
        ("labels", labels, 1),
    ):
        if arr is None:
            continue
        if arr.ndim != ndim:
            raise ValueError(f"embedding_quality: {name} must be {ndim}-D, got shape {arr.shape}")
        if n is not None and arr.shape[0] != n:
            raise ValueError(
                f"embedding_quality: {name} has {arr.shape[0]} rows, expected {n} "
                "(features, coords and labels must describe the same samples)"
            )
        n = arr.shape[0]
        if name != "labels" and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise ValueError(
                f"embedding_quality: {name} has NaN/inf in {bad.size} rows "
                f"(first row indices: {bad[:10].tolist()})"
            )
    if n is None:
        raise ValueError("embedding_quality: nothing to measure (all inputs are None)")
    return n


def knn_vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Majority label per row of ``neighbour_labels`` (N, k), columns sorted nearest first.

    Ties go to the tied class that appears first (i.e. has the nearest member).
    """
    nl = np.asarray(neighbour_labels)
    k = nl.shape[1]
    # counts[n, j] = how many of row n's neighbours share neighbour j's label
    counts = (nl[:, :, None] == nl[:, None, :]).sum(axis=2)
    score = counts * (k + 1) - np.arange(k)[None, :]
    return nl[np.arange(nl.shape[0]), score.argmax(axis=1)]


def _drop_self(indices: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own index from its (k+1) neighbour list; keep k neighbours."""
    is_self = indices == queries[:, None]
    # rows where self was not returned (exact duplicates pushed it out): drop the last column
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    # keep exactly one dropped entry per row (the first self hit)
    first = is_self.argmax(axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(len(queries)), first] = False
    return indices[keep].reshape(len(queries), k)


def knn_accuracy(
    points: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] = KNN_KS,
    *,
    queries: np.ndarray | None = None,
    metric: str = "euclidean",
) -> dict[int, float]:
    """Leave-one-out kNN accuracy of ``labels`` from neighbours in ``points`` (exact search).

    ``queries`` (indices) restricts which points are classified; neighbours come from all.
    """
    labels = np.asarray(labels)
    n = points.shape[0]
    ks = tuple(k for k in ks if k < n)
    if not ks:
        return {}
    kmax = max(ks)
    q = np.arange(n) if queries is None else np.asarray(queries)
    if metric == "cosine":
        norms = np.linalg.norm(points, axis=1, keepdims=True)
        points = points / np.maximum(norms, 1e-12)
    algorithm = "kd_tree" if points.shape[1] <= 3 else "brute"
    nn = NearestNeighbors(n_neighbors=kmax + 1, algorithm=algorithm).fit(points)
    out: dict[int, float] = {}
    idx_all = np.empty((len(q), kmax), dtype=np.int64)
    chunk = 2048
    for s in range(0, len(q), chunk):
        qs = q[s : s + chunk]
        _, idx = nn.kneighbors(points[qs])
        idx_all[s : s + chunk] = _drop_self(idx, qs, kmax)
    for k in ks:
        pred = knn_vote(labels[idx_all[:, :k]])
        out[k] = float((pred == labels[q]).mean())
    return out


def _reduce_features(
    features: np.ndarray, *, seed: int, exact_max_dim: int, exact_max_n: int, pca_dims: int
) -> tuple[np.ndarray, str]:
    """L2-normalise; PCA-reduce when exact brute-force search would be too slow."""
    x = features.astype(np.float32, copy=False)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n, d = x.shape
    if d > exact_max_dim and n > exact_max_n and pca_dims < min(n, d):
        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
        return x, f"cosine (L2-normalised, PCA-{pca_dims})"
    return x, "cosine (L2-normalised)"


def _subsample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= size else np.sort(rng.choice(n, size=size, replace=False))


def trustworthiness(
    features: np.ndarray,
    coords: np.ndarray,
    *,
    k: int = TRUST_K,
    seed: int = 0,
    max_points: int = MAX_SUBSAMPLE,
) -> float:
    """sklearn's trustworthiness on a seeded subsample of at most ``max_points`` points."""
    n = features.shape[0]
    idx = _subsample(n, max_points, np.random.default_rng(seed))
    k = min(k, (len(idx) - 1) // 2)  # sklearn requires k < n/2
    if k < 1:
        return float("nan")
    return float(_sk_trustworthiness(features[idx], coords[idx], n_neighbors=k))


def embedding_quality(
    features: np.ndarray | None,
    coords: np.ndarray,
    labels: np.ndarray | None,
    *,
    seed: int = 0,
    ks: tuple[int, ...] = KNN_KS,
    trust_k: int = TRUST_K,
    max_subsample: int = MAX_SUBSAMPLE,
    max_queries: int = 10_000,
    exact_max_dim: int = 256,
    exact_max_n: int = 10_000,
    feature_pca_dims: int = 128,
) -> dict[str, float | int | str]:
    """All quality numbers of one embedding as a flat JSON-ready dict.

    ``features`` may be None (only the 2-D numbers); ``labels`` may be None (only
    trustworthiness). Keys: ``knn_feat@k``, ``knn_2d@k``, ``trustworthiness``,
    ``silhouette_2d``, plus ``n``, ``n_classes``, ``knn_feat_space``, ``knn_feat_queries``.
    """
    features = None if features is None else np.asarray(features)
    coords = np.asarray(coords)
    labels = None if labels is None else np.asarray(labels)
    n = _check_inputs(features, coords, labels)
    rng = np.random.default_rng(seed)
    out: dict[str, float | int | str] = {"n": int(n)}
    if labels is not None:
        n_classes = int(np.unique(labels).size)
        out["n_classes"] = n_classes
        if features is not None:
            reduced, space = _reduce_features(
                features,
                seed=seed,
                exact_max_dim=exact_max_dim,
                exact_max_n=exact_max_n,
                pca_dims=feature_pca_dims,
            )
            queries = _subsample(n, max_queries, rng)
            for k, acc in knn_accuracy(reduced, labels, ks, queries=queries).items():
                out[f"knn_feat@{k}"] = acc
            out["knn_feat_space"] = space
            out["knn_feat_queries"] = int(len(queries))
        for k, acc in knn_accuracy(coords, labels, ks).items():
            out[f"knn_2d@{k}"] = acc
        if 2 <= n_classes < n:
            idx = _subsample(n, max_subsample, rng)
            sub_labels = labels[idx]
            if 2 <= np.unique(sub_labels).size < len(idx):
                out["silhouette_2d"] = float(silhouette_score(coords[idx], sub_labels))
    if features is not None:
        out["trustworthiness"] = trustworthiness(
            features, coords, k=trust_k, seed=seed, max_points=max_subsample
        )
    return out
