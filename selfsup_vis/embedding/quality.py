"""Numbers that say how good a 2-D embedding is, computed next to every t-SNE picture.

- ``knn_feat@k``: leave-one-out kNN accuracy in feature space, in the space the embedding was
  computed in (``metric``: cosine = Euclidean on L2-normalised features, the usual choice for
  self-supervised features as in the kNN monitors of DINO / MoCo, or Euclidean; optionally
  standardised, see ``embedding.space``); above ``exact_max_dim`` dimensions and
  ``exact_max_n`` points that space is first PCA-reduced, and at most ``max_queries`` seeded
  query points are classified (their neighbours are searched among all points). The dict
  says which (``knn_feat_space``).
- ``knn_2d@k``: the same leave-one-out kNN accuracy on the 2-D coordinates (euclidean, all
  points). The gap to ``knn_feat@k`` is the class structure the picture loses.
- ``trustworthiness``: sklearn's trustworthiness (k=10) between the features in that same
  space (the space t-SNE embeds) and the coordinates, on a seeded subsample of at most 5000
  points.
- ``labelings`` (only with ``extra_labels``): the kNN numbers of every other labeling (e.g.
  shape and texture of cue-conflict images) from the same neighbour lists; numeric labelings
  get the R² of kNN regression (``knn_feat_r2@k``, ``knn_2d_r2@k``) instead of accuracy.
- ``silhouette_2d``: silhouette score of the labels in 2-D, on the same kind of subsample.

kNN votes are unweighted majority votes of the k nearest other points (the point itself is
excluded, also when it has exact duplicates); ties go to the tied class whose member is
nearest.

``exclude_groups`` (N, G) integer group ids: a neighbour that shares any group id with the query
is not counted either (the next nearest takes its place). For cue-conflict stimuli
(``airplane1-bicycle2.png``) :func:`~selfsup_vis.embedding.labels.stimulus_sources` gives the
source images (the shape image ``airplane1`` and the texture image ``bicycle2``): a stimulus
made from the same shape or texture image as the query shares the label it is scored on by
construction, and raw pixels found 0.923 kNN accuracy on the 1,280 stimuli through it alone.
``knn_exclusion`` in the output says when this was done.

``HEADLINE_K`` (20, the k of DINO's kNN monitor) is the one k the figures, the headline, the
layer ranking and report.html show; ``KNN_KS`` are all the ks measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness as _sk_trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

from selfsup_vis.embedding.knn import knn as exact_knn
from selfsup_vis.embedding.space import describe_space, to_metric_space

KNN_KS: tuple[int, ...] = (10, 20)
HEADLINE_K = 20
log = logging.getLogger(__name__)

TRUST_K = 10
#: features whose total variance is below this fraction of their mean squared norm are
#: "collapsed": every row (nearly) the same point, so any neighbourhood number is meaningless
COLLAPSE_REL_VARIANCE = 1e-6
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


def max_excluded(groups: np.ndarray | None) -> int:
    """An upper bound of how many other points one query can have excluded by ``groups``."""
    if groups is None:
        return 0
    g = np.asarray(groups).reshape(len(groups), -1)
    return int(sum(np.unique(g[:, j], return_counts=True)[1].max() - 1 for j in range(g.shape[1])))


def knn_neighbours(points: np.ndarray, kmax: int, queries: np.ndarray | None = None,
                   exclude_groups: np.ndarray | None = None) -> np.ndarray:
    """Indices (len(queries), kmax) of each query's nearest other points (Euclidean, exact,
    nearest first); computed once and shared by every labeling that is scored on them.
    2-D/3-D points: sklearn's k-d tree; more dimensions: ``embedding.knn`` (torch).
    ``exclude_groups`` (N, G): neighbours sharing a group id with the query are skipped."""
    n = points.shape[0]
    q = np.arange(n) if queries is None else np.asarray(queries)
    if exclude_groups is not None:
        g = np.asarray(exclude_groups).reshape(n, -1)
        wide = min(n - 1, kmax + max_excluded(g))
        idx = knn_neighbours(points, wide, q)
        keep = ~(g[idx] == g[q][:, None, :]).any(axis=2)
        if (keep.sum(axis=1) < kmax).any():
            raise ValueError(f"kNN: fewer than k={kmax} neighbours from other source images")
        order = np.argsort(~keep, axis=1, kind="stable")[:, :kmax]  # kept ones, nearest first
        return np.take_along_axis(idx, order, axis=1)
    if points.shape[1] > 3:
        # brute force: the chunked torch search (GPU when available) finds the same neighbours
        # as sklearn's brute force (ties aside), several times faster on the CPU for cosine
        return exact_knn(points, kmax, queries=q, exclude_self=True)[0]
    nn = NearestNeighbors(n_neighbors=kmax + 1, algorithm="kd_tree").fit(points)
    idx_all = np.empty((len(q), kmax), dtype=np.int64)
    chunk = 2048
    for s in range(0, len(q), chunk):
        qs = q[s : s + chunk]
        _, idx = nn.kneighbors(points[qs])
        idx_all[s : s + chunk] = _drop_self(idx, qs, kmax)
    return idx_all


def knn_scores(neighbours: np.ndarray, values: np.ndarray, queries: np.ndarray,
               ks: tuple[int, ...]) -> dict[int, float]:
    """kNN accuracy (integer/str labels: majority vote) or kNN-regression R² (float values:
    mean of the neighbours' values) of ``values`` at each k, from precomputed neighbours."""
    values = np.asarray(values)
    truth = values[queries]
    out: dict[int, float] = {}
    for k in ks:
        if np.issubdtype(values.dtype, np.floating):
            pred = values[neighbours[:, :k]].mean(axis=1)
            sst = float(((truth - truth.mean()) ** 2).sum())
            out[k] = float(1.0 - ((truth - pred) ** 2).sum() / sst) if sst > 0 else float("nan")
        else:
            out[k] = float((knn_vote(values[neighbours[:, :k]]) == truth).mean())
    return out


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
    q = np.arange(n) if queries is None else np.asarray(queries)
    points = to_metric_space(points, metric)
    return knn_scores(knn_neighbours(points, max(ks), q), labels, q, ks)


def _reduce_features(
    x: np.ndarray, space: str, *, seed: int, exact_max_dim: int, exact_max_n: int, pca_dims: int
) -> tuple[np.ndarray, str]:
    """``x`` already in the metric space; PCA-reduce when exact brute-force search would be
    too slow, and say so in the space's name."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    if d > exact_max_dim and n > exact_max_n and pca_dims < min(n, d):
        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
        return x, f"{space[:-1]}, PCA-{pca_dims})"
    return x, space


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


def collapse_problem(features: np.ndarray, max_rows: int = 10_000, seed: int = 0) -> str | None:
    """Why ``features`` are collapsed (all rows nearly identical: total variance below
    :data:`COLLAPSE_REL_VARIANCE` of the mean squared norm, or zero), or None. Measured on at
    most ``max_rows`` seeded rows, in float64."""
    x = np.asarray(features)
    if x.ndim != 2 or len(x) < 2:
        return None
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))]
    x = np.asarray(x, dtype=np.float64)
    total_var = float(x.var(axis=0).sum())
    mean_sq = float((x * x).sum(axis=1).mean())
    if total_var <= COLLAPSE_REL_VARIANCE * mean_sq or total_var == 0.0:
        rel = total_var / mean_sq if mean_sq > 0 else 0.0
        return (f"collapsed features: all {len(x)} rows are nearly identical (total variance "
                f"{total_var:.3g}, {rel:.2g} of the mean squared norm); the map and its numbers "
                f"say nothing about the data")
    return None


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
    metric: str = "cosine",
    standardize: bool = False,
    extra_labels: Mapping[str, np.ndarray] | None = None,
    exclude_groups: np.ndarray | None = None,
    exclusion_note: str | None = None,
) -> dict[str, float | int | str]:
    """All quality numbers of one embedding as a flat JSON-ready dict.

    ``features`` (raw) are mapped into the ``metric`` space (``standardize`` first) exactly as
    ``compute_embedding`` does, so the numbers describe the space the map was made from.
    ``features`` may be None (only the 2-D numbers); ``labels`` may be None (only
    trustworthiness). Keys: ``knn_feat@k``, ``knn_2d@k``, ``trustworthiness``,
    ``silhouette_2d``, plus ``n``, ``n_classes``, ``knn_feat_space``, ``knn_feat_queries``, and
    with ``extra_labels`` (name -> per-sample labels or float values) ``labelings``: name ->
    that labeling's kNN numbers from the same neighbours. Float ``labels`` (a numeric labeling)
    get ``knn_feat_r2@k`` / ``knn_2d_r2@k`` and no silhouette. ``exclude_groups`` /
    ``exclusion_note``: see the module docstring (``knn_exclusion`` says what was excluded).
    """
    features = None if features is None else np.asarray(features)
    coords = np.asarray(coords)
    labels = None if labels is None else np.asarray(labels)
    n = _check_inputs(features, coords, labels)
    for name, values in (extra_labels or {}).items():
        if np.asarray(values).shape != (n,):
            raise ValueError(f"embedding_quality: labeling {name!r} has shape {np.asarray(values).shape}, "
                             f"expected ({n},)")
    rng = np.random.default_rng(seed)
    out: dict[str, float | int | str] = {"n": int(n)}
    collapsed = None if features is None else collapse_problem(features, seed=seed)
    if collapsed:
        log.warning("%s", collapsed)
        out["collapsed"] = collapsed  # summary.json and the figure (format_quality) say so
    space_x = None if features is None else to_metric_space(features, metric, standardize)
    ks_n = tuple(k for k in ks if k < n - max_excluded(exclude_groups))
    if exclude_groups is not None:
        out["knn_exclusion"] = exclusion_note or "neighbours sharing a group with the query"
    labelings: dict[str, dict[str, float | int]] = {name: {} for name in (extra_labels or {})}
    if labels is not None or extra_labels:
        queries = _subsample(n, max_queries, rng)
        feat_nb = None
        if space_x is not None and ks_n:
            reduced, space = _reduce_features(
                space_x,
                describe_space(metric, standardize),
                seed=seed,
                exact_max_dim=exact_max_dim,
                exact_max_n=exact_max_n,
                pca_dims=feature_pca_dims,
            )
            feat_nb = knn_neighbours(reduced, max(ks_n), queries, exclude_groups)
            out["knn_feat_space"] = space
            out["knn_feat_queries"] = int(len(queries))
        all_q = np.arange(n)
        nb_2d = knn_neighbours(coords, max(ks_n), all_q, exclude_groups) if ks_n else None
        for name, values in (extra_labels or {}).items():
            values = np.asarray(values)
            numeric = np.issubdtype(values.dtype, np.floating)
            tag = "_r2" if numeric else ""
            entry = labelings[name]
            if not numeric:
                entry["n_classes"] = int(np.unique(values).size)
            if feat_nb is not None:
                for k, v in knn_scores(feat_nb, values, queries, ks_n).items():
                    entry[f"knn_feat{tag}@{k}"] = v
            if nb_2d is not None:
                for k, v in knn_scores(nb_2d, values, all_q, ks_n).items():
                    entry[f"knn_2d{tag}@{k}"] = v
    if labels is not None:
        numeric = np.issubdtype(labels.dtype, np.floating)
        tag = "_r2" if numeric else ""
        n_classes = 0 if numeric else int(np.unique(labels).size)
        if not numeric:
            out["n_classes"] = n_classes
        if feat_nb is not None:
            for k, acc in knn_scores(feat_nb, labels, queries, ks_n).items():
                out[f"knn_feat{tag}@{k}"] = acc
        if nb_2d is not None:
            for k, acc in knn_scores(nb_2d, labels, all_q, ks_n).items():
                out[f"knn_2d{tag}@{k}"] = acc
        if 2 <= n_classes < n:
            idx = _subsample(n, max_subsample, rng)
            sub_labels = labels[idx]
            if 2 <= np.unique(sub_labels).size < len(idx):
                out["silhouette_2d"] = float(silhouette_score(coords[idx], sub_labels))
    if space_x is not None:
        out["trustworthiness"] = trustworthiness(
            space_x, coords, k=trust_k, seed=seed, max_points=max_subsample
        )
    if extra_labels:
        out["labelings"] = labelings  # type: ignore[assignment]
    return out
