"""Memory-bounded t-SNE for large N (10^5 – 10^6+ points), built from openTSNE's parts.

The in-memory path (``backends._embed_opentsne``) holds the features as float32, PCA's working
copies, openTSNE's float64 copy and its kNN arrays at once: about 5× the feature bytes. Here:

1. **PCA on a sample**: the projection is fitted on a seeded sample of rows (default 50 000),
   then applied chunk by chunk to the (memory-mapped) features, float32 throughout; every chunk
   is checked for NaN/inf on the way. Only the (N, pca_dims) float32 result is kept.
2. **kNN graph** with openTSNE's Annoy (or pynndescent) index on that result; the index is
   freed as soon as the neighbours are known.
3. **Affinities**: openTSNE's ``joint_probabilities_nn`` (perplexity-calibrated Gaussians,
   symmetrised). openTSNE's gradient code is compiled for float64, so ``P`` stays float64;
   the neighbour distances are kept float32 until then.
4. **Optimisation**: openTSNE's ``TSNE.fit`` on those affinities (early exaggeration, then
   the normal phase, ``TSNEEmbedding.optimize`` underneath) from openTSNE's ``pca``
   initialisation of the reduced rows, as in the in-memory path.

Only these arrays live at once: the PCA sample (sample × D), the reduced features
(N × pca_dims), the kNN arrays (N × 3·perplexity) and ``P``. Each phase is timed and can be
wrapped by a caller's context manager (the benchmark samples peak RSS per phase).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfsup_vis.embedding.space import to_metric_space

log = logging.getLogger(__name__)

LARGE_N = 100_000  # compute_embedding switches to this path from here on (task.large_n)
PCA_SAMPLE = 50_000
CHUNK_ROWS = 16_384

PhaseHook = Callable[[str], AbstractContextManager]


@dataclass
class SampledPCA:
    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (d, D) float32
    explained_variance_ratio: float
    sample_n: int


@dataclass
class Space:
    """Row transform into the metric space (``embedding.space``), applied chunk by chunk:
    standardisation with statistics of all rows (one extra pass), then L2 rows for cosine."""

    metric: str = "euclidean"
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.mean is not None:
            block = ((block - self.mean) * self.scale).astype(np.float32)
        return np.asarray(to_metric_space(block, self.metric), dtype=np.float32)


def metric_space(x: Any, metric: str, standardize: bool, chunk_rows: int = CHUNK_ROWS) -> Space:
    """The chunked equivalent of ``to_metric_space(x, metric, standardize)``."""
    if not standardize:
        return Space(metric)
    n, d = len(x), int(x.shape[1])
    total, sq = np.zeros(d), np.zeros(d)
    for start in range(0, n, chunk_rows):
        block = np.asarray(x[start : start + chunk_rows], dtype=np.float64)
        total += block.sum(axis=0)
        sq += (block * block).sum(axis=0)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0))
    scale = np.where(std > 1e-12, 1.0 / np.maximum(std, 1e-12), 0.0)
    return Space(metric, mean.astype(np.float32), scale.astype(np.float32))


def _rows(x: Any, start: int, stop: int) -> np.ndarray:
    return np.asarray(x[start:stop], dtype=np.float32)


def _take(x: Any, idx: np.ndarray) -> np.ndarray:
    if hasattr(x, "take") and not isinstance(x, np.ndarray):
        return np.asarray(x.take(idx), dtype=np.float32)  # FeatureShards: reads only those rows
    return np.asarray(x[idx], dtype=np.float32)


def _raise_nonfinite(x: Any, rows: np.ndarray, n: int, what: str) -> None:
    shown = ", ".join(map(str, rows[:10].tolist())) + (", ..." if rows.size > 10 else "")
    where = f" ({x.locate(rows)})" if hasattr(x, "locate") else ""
    raise ValueError(
        f"{what} contain NaN or inf values in rows {shown} of {n}{where}; nothing was embedded. "
        "Check the model/layer that produced them (e.g. fp16 overflow) or drop those samples."
    )


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``min(n, size)`` row indices (all rows when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def fit_pca_on_sample(x: Any, dims: int, *, seed: int, sample: int = PCA_SAMPLE,
                      space: Space | None = None, what: str = "features") -> SampledPCA:
    """PCA to ``dims`` components fitted on a seeded sample of rows (same solver choice as
    ``backends.pca_reduce``, so for N <= sample it is the in-memory path's PCA)."""
    from sklearn.decomposition import PCA

    n = len(x)
    idx = sample_indices(n, sample, seed)
    xs = _take(x, idx)
    bad = ~np.isfinite(xs).all(axis=1)
    if bad.any():
        _raise_nonfinite(x, idx[bad], n, what)
    xs = space(xs) if space is not None else xs
    if min(xs.shape) > 500 and dims < 0.8 * min(xs.shape):
        pca = PCA(int(dims), svd_solver="randomized", iterated_power=2, random_state=seed)
    else:
        pca = PCA(n_components=int(dims), random_state=seed)
    pca.fit(xs)
    return SampledPCA(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
        sample_n=int(idx.size),
    )


def project_in_chunks(x: Any, pca: SampledPCA | None, *, chunk_rows: int = CHUNK_ROWS,
                      space: Space | None = None, what: str = "features") -> np.ndarray:
    """(N, d) float32 projection of ``x``, read ``chunk_rows`` rows at a time; NaN/inf rows are
    an error naming them. ``pca=None`` copies the rows as float32 (no reduction)."""
    n = len(x)
    d = x.shape[1] if pca is None else pca.components.shape[0]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        block = _rows(x, start, start + chunk_rows)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            _raise_nonfinite(x, start + np.flatnonzero(bad), n, what)
        if space is not None:
            block = space(block)
        if pca is None:
            out[start : start + len(block)] = block
        else:
            block -= pca.mean
            np.matmul(block, pca.components.T, out=out[start : start + len(block)])
    return out


def knn_graph(reduced: np.ndarray, k: int, *, method: str = "annoy", n_trees: int = 10,
              seed: int = 0, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32, distances float32), both (N, k), from openTSNE's kNN index, which is
    freed before returning."""
    from openTSNE import nearest_neighbors

    if method == "annoy":
        index = nearest_neighbors.Annoy(reduced, k, metric="euclidean", n_jobs=n_jobs,
                                        random_state=seed, knn_kwargs={"n_trees": n_trees})
    elif method == "pynndescent":
        index = nearest_neighbors.NNDescent(reduced, k, metric="euclidean", n_jobs=n_jobs,
                                            random_state=seed)
    elif method == "exact":
        index = nearest_neighbors.Sklearn(reduced, k, metric="euclidean", n_jobs=n_jobs,
                                          random_state=seed)
    else:
        raise ValueError(f"unknown kNN method {method!r}; choose annoy, pynndescent or exact")
    idx, dist = index.build()
    del index
    return idx.astype(np.int32), dist.astype(np.float32)


def affinities_from_knn(indices: np.ndarray, distances: np.ndarray, perplexity: float, *,
                        n_jobs: int = 1):
    """openTSNE's perplexity-based, symmetrised, normalised ``P`` as an Affinities object."""
    from openTSNE.affinity import PrecomputedAffinities, joint_probabilities_nn

    P = joint_probabilities_nn(indices, distances, [perplexity], symmetrize=True, n_jobs=n_jobs)
    return PrecomputedAffinities(P, normalize=False)


@contextlib.contextmanager
def _timed(name: str, seconds: dict[str, float], hook: PhaseHook | None) -> Iterator[None]:
    start = time.perf_counter()
    log.info("large-N %s ...", name)
    with hook(name) if hook is not None else contextlib.nullcontext():
        yield
    seconds[name] = time.perf_counter() - start
    log.info("large-N %s done in %.2f s", name, seconds[name])


def embed_large(
    x: Any,
    *,
    perplexity: float,
    seed: int,
    pca_dims: int | None,
    n_iter: int,
    early_exaggeration_iter: int,
    early_exaggeration: float,
    learning_rate: float | str,
    init: str,
    n_jobs: int,
    metric: str = "euclidean",
    standardize: bool = False,
    neighbors: str = "annoy",
    n_trees: int = 10,
    pca_sample: int = PCA_SAMPLE,
    chunk_rows: int = CHUNK_ROWS,
    tsne_kwargs: dict[str, Any] | None = None,
    phase: PhaseHook | None = None,
    what: str = "features",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed the (N, D) rows of ``x`` (array, memmap or ``FeatureShards``) in 2-D.

    Returns float32 coordinates and what was done (sample sizes, k, phase seconds).
    """
    from openTSNE import TSNE

    n, dim = len(x), int(x.shape[1])
    seconds: dict[str, float] = {}
    info: dict[str, Any] = {"path": "large (memory-bounded)", "phases_s": seconds}
    use_pca = bool(pca_dims) and int(pca_dims) < min(n, dim)
    with _timed("pca", seconds, phase):
        space = metric_space(x, metric, standardize, chunk_rows)
        pca = (fit_pca_on_sample(x, int(pca_dims), seed=seed, sample=pca_sample, space=space, what=what)
               if use_pca else None)
        reduced = project_in_chunks(x, pca, chunk_rows=chunk_rows, space=space, what=what)
    if pca is not None:
        info.update(pca_sample=pca.sample_n, pca_explained_variance=pca.explained_variance_ratio)
    k = min(n - 1, int(3 * perplexity))
    with _timed("knn", seconds, phase):
        indices, distances = knn_graph(reduced, k, method=neighbors, n_trees=n_trees, seed=seed,
                                       n_jobs=n_jobs)
        affinities = affinities_from_knn(indices, distances, perplexity, n_jobs=n_jobs)
        del indices, distances
    info.update(k_neighbors=k, knn_method=neighbors, affinity_nnz=int(affinities.P.nnz),
                affinity_dtype=str(affinities.P.dtype))
    with _timed("optimisation", seconds, phase):
        if init == "pca":  # openTSNE's own PCA initialisation, on the reduced rows
            from openTSNE import initialization

            start: np.ndarray | str = initialization.pca(reduced.astype(np.float64), random_state=seed)
        else:
            start = init
        del reduced
        tsne = TSNE(
            n_components=2, perplexity=perplexity, learning_rate=learning_rate,
            early_exaggeration=early_exaggeration, early_exaggeration_iter=early_exaggeration_iter,
            n_iter=n_iter, n_jobs=n_jobs, random_state=seed, negative_gradient_method="fft",
            **(tsne_kwargs or {}),
        )  # fmt: skip
        emb = tsne.fit(affinities=affinities, initialization=start)
        coords = np.asarray(emb, dtype=np.float32)
        del emb, affinities
    return coords, info
