"""Memory-bounded t-SNE for large N (10^5 – 10^6+ points), built from openTSNE's parts.

The in-memory path (``backends._embed_opentsne``) holds the features as float32, PCA's working
copies, openTSNE's float64 copy and its kNN arrays at once: about 5× the feature bytes. Here:

1. **PCA on a sample**: the projection is fitted on a seeded sample of rows (default 50 000),
   then applied chunk by chunk to the (memory-mapped) features, float32 throughout; every chunk
   is checked for NaN/inf on the way. Only the (N, pca_dims) float32 result is kept.
2. **kNN graph** with openTSNE's Annoy (or pynndescent) index on that result (its trees, the
   neighbours asked in thread slices: :func:`build_knn`); the index is freed as soon as the
   neighbours are known.
3. **Affinities**: openTSNE's ``joint_probabilities_nn`` (perplexity-calibrated Gaussians,
   symmetrised). openTSNE's gradient code is compiled for float64, so ``P`` stays float64;
   the neighbour distances are kept float32 until then.
4. **Optimisation**: openTSNE's ``TSNE.fit`` on those affinities (early exaggeration, then
   the normal phase, ``TSNEEmbedding.optimize`` underneath) from openTSNE's ``pca``
   initialisation of the reduced rows, as in the in-memory path.

Only these arrays live at once: the PCA sample (sample × D), the reduced features
(N × pca_dims), the kNN arrays (N × 3·perplexity) and ``P``. Each phase is timed and can be
wrapped by a caller's context manager (the benchmark samples peak RSS per phase).

**Optimise a sample, place the rest** (``embed_sample``; the approach openTSNE's authors use
for millions of points: Poličar et al., "openTSNE", and Kobak & Berens 2019). Above
``embed_sample`` rows, steps 2-4 run on a seeded sample of that many rows only; the same Annoy
index (built on the sample) is queried chunk by chunk for every other row's ``k_place`` nearest
sample points, and each such row is put at the median of their optimised coordinates
(openTSNE's ``initialization.median``, the default of its ``prepare_partial``) plus a tiny
seeded Gaussian jitter so rows with the same neighbours do not stack. The kNN
graph, ``P`` and the gradient iterations then scale with the sample, not with N; besides the
reduced rows only the placed rows' neighbour lists ((N - sample) × k_place int32) are added,
and the reduced rows of the sample are the only copy made of them. This is never
silent: a WARNING says how many rows were optimised and placed, ``info`` records it
(``optimised_n``, ``placed_n``, ``placement``, ``k_place``) and :func:`placement_note` is the
line figures show.
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

from selfsup_vis.config.schemas import TsneTaskConfig
from selfsup_vis.embedding.space import to_metric_space

log = logging.getLogger(__name__)

LARGE_N = TsneTaskConfig.large_n  # compute_embedding switches to this path from here (schema: 100k)
PCA_SAMPLE = 50_000
CHUNK_ROWS = 16_384
EMBED_SAMPLE = TsneTaskConfig.embed_sample  # optimise at most this many rows, place the rest (250k)
# Placement, measured at N = 200k with 50k optimised (bench_scale's mixture, 2-D kNN@10 of the
# placed points): median of k = 1 / 3 / 5 / 10 / 25 nearest optimised: 0.841 / 0.866 / 0.874 /
# 0.861 / 0.838; openTSNE's weighted_mean (k = 10) 0.777. Annoy's default search (n_trees × k
# candidates) misses many true neighbours at small k: 0.798 with 50 candidates, 0.874 with 250,
# 0.882 with 1000 (3x the query time of 250).
K_PLACE = 5  # a placed row goes to the median of this many nearest optimised rows
PLACE_SEARCH_K = 250  # Annoy candidates inspected per placed row (its default: n_trees × k)
PLACE_JITTER = 0.001  # jitter std of placed rows, as a fraction of the map's std (x axis)
OPTIMISED_STREAM = 1  # the optimised rows' own random stream (see sample_indices)
PLACEMENT = "median of the k nearest optimised points (openTSNE initialization.median) + seeded jitter"

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


def sample_indices(n: int, size: int, seed: int, stream: int | None = None) -> np.ndarray:
    """Sorted seeded sample of ``min(n, size)`` row indices (all rows when n <= size).

    ``stream`` draws from ``default_rng([seed, stream])`` instead of ``default_rng(seed)``:
    seeded samples of different sizes from one seed are nested (numpy draws a prefix of the
    same permutation), so a sample that must be independent of the others (the optimised rows
    vs the quality subsample) takes its own stream."""
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed if stream is None else [seed, stream])
    return np.sort(rng.choice(n, size=size, replace=False))


def fit_pca_on_sample(x: Any, dims: int, *, seed: int, sample: int = PCA_SAMPLE,
                      space: Space | None = None, what: str = "features") -> SampledPCA:
    """PCA to ``dims`` components fitted on a seeded sample of rows (same solver choice as
    ``backends.pca_reduce``, so for N <= sample it is the in-memory path's PCA)."""
    n = len(x)
    idx = sample_indices(n, sample, seed)
    xs = _take(x, idx)
    bad = ~np.isfinite(xs).all(axis=1)
    if bad.any():
        _raise_nonfinite(x, idx[bad], n, what)
    return fit_pca(space(xs) if space is not None else xs, dims, seed=seed)


def fit_pca(xs: np.ndarray, dims: int, *, seed: int) -> SampledPCA:
    """PCA of the rows ``xs`` (already in the metric space), solver as ``backends.pca_reduce``."""
    from sklearn.decomposition import PCA

    if min(xs.shape) > 500 and dims < 0.8 * min(xs.shape):
        pca = PCA(int(dims), svd_solver="randomized", iterated_power=2, random_state=seed)
    else:
        pca = PCA(n_components=int(dims), random_state=seed)
    pca.fit(xs)
    return SampledPCA(
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=float(pca.explained_variance_ratio_.sum()),
        sample_n=int(xs.shape[0]),
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


def knn_index(reduced: np.ndarray, k: int, *, method: str = "annoy", n_trees: int = 10,
              seed: int = 0, n_jobs: int = 1):
    """openTSNE's kNN index object (not built yet) for ``reduced`` and ``k`` neighbours."""
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
    return index


def build_knn(index) -> tuple[np.ndarray, np.ndarray]:
    """Build ``index`` (from :func:`knn_index`) and return its data's kNN graph, (indices
    int32, distances float32), both (N, k).

    openTSNE's ``Annoy.build`` adds the rows, builds the trees, then asks for each row's
    neighbours through one joblib task per row. Here the same trees (same seed derivation, so
    the same neighbours, tested) are asked in ``n_jobs`` thread slices: 50k × 2048 → PCA-100,
    k = 90: 3.4 s wall / 6.1 CPU s instead of 7.0 s / 11.5 s. Other indexes: their ``build``.
    """
    if type(index).__name__ != "Annoy":
        idx, dist = index.build()
        return idx.astype(np.int32), dist.astype(np.float32)
    from concurrent.futures import ThreadPoolExecutor

    from openTSNE.dependencies.annoy import AnnoyIndex
    from sklearn.utils import check_random_state

    data, k, n_jobs = index.data, int(index.k), max(1, int(index.n_jobs))
    n = data.shape[0]
    annoy = AnnoyIndex(data.shape[1], "euclidean")
    annoy.set_seed(check_random_state(index.random_state).randint(np.iinfo(np.int32).max))
    for i in range(n):
        annoy.add_item(i, data[i])
    annoy.build(n_jobs=n_jobs, **{"n_trees": 50, **(index.knn_kwargs or {})})
    index.index = annoy  # openTSNE's Annoy.query works on it as after its own build
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):  # Annoy returns the row itself first
            nb, d = annoy.get_nns_by_item(i, k + 1, include_distances=True)
            indices[i], distances[i] = nb[1:], d[1:]

    bounds = np.linspace(0, n, n_jobs + 1).astype(int)
    with ThreadPoolExecutor(n_jobs) as pool:
        list(pool.map(work, bounds[:-1], bounds[1:]))
    return indices, distances


def knn_graph(reduced: np.ndarray, k: int, *, method: str = "annoy", n_trees: int = 10,
              seed: int = 0, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32, distances float32), both (N, k), from openTSNE's kNN index, which is
    freed before returning."""
    index = knn_index(reduced, k, method=method, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
    idx, dist = build_knn(index)
    del index
    return idx, dist


def _annoy_query(annoy, rows: np.ndarray, k: int, n_jobs: int, search_k: int = -1) -> np.ndarray:
    """(len(rows), k) int32 neighbours from a built AnnoyIndex, ``n_jobs`` threads over slices.
    openTSNE's ``Annoy.query`` gives the same neighbours at ``search_k=-1`` (tested) but takes
    no ``search_k`` and dispatches one joblib task per point: 30 000 queries (k=10, 100-d) took
    2.2 CPU s there and 0.9 CPU s here."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(rows), k), dtype=np.int32)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            out[i] = annoy.get_nns_by_vector(rows[i], k, search_k=search_k)

    bounds = np.linspace(0, len(rows), max(1, n_jobs) + 1).astype(int)
    if n_jobs <= 1:
        work(0, len(rows))
    else:
        with ThreadPoolExecutor(n_jobs) as pool:
            list(pool.map(work, bounds[:-1], bounds[1:]))
    return out


def query_in_chunks(index, reduced: np.ndarray, rows: np.ndarray, k: int, *, n_jobs: int = 1,
                    chunk_rows: int = CHUNK_ROWS, search_k: int = -1) -> np.ndarray:
    """(len(rows), k) int32: the ``k`` nearest indexed points of ``reduced[rows]``, asked
    ``chunk_rows`` at a time (no second copy of the reduced rows). Annoy indexes are queried
    directly (see :func:`_annoy_query`; ``search_k``: candidates inspected, -1 = Annoy's
    default), the others through openTSNE's ``index.query``."""
    out = np.empty((len(rows), k), dtype=np.int32)
    annoy = getattr(index, "index", None) if type(index).__name__ == "Annoy" else None
    for start in range(0, len(rows), chunk_rows):
        block = reduced[rows[start : start + chunk_rows]]
        if annoy is not None:
            out[start : start + len(block)] = _annoy_query(annoy, block, k, n_jobs, search_k)
        else:
            out[start : start + len(block)] = index.query(block.astype(np.float64), k)[0]
    return out


def place_points(optimised: np.ndarray, neighbours: np.ndarray, *, seed: int,
                 jitter: float = PLACE_JITTER, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(M, 2) float32 positions of M rows from the optimised coordinates of their nearest
    optimised rows (``neighbours``, (M, k) indices into ``optimised``): openTSNE's
    ``initialization.median``, then a seeded Gaussian jitter of std ``jitter`` × the map's std
    (of the optimised points, so it does not depend on M)."""
    from openTSNE import initialization

    opt = np.asarray(optimised, dtype=np.float64)
    out = np.empty((len(neighbours), 2), dtype=np.float32)
    for start in range(0, len(neighbours), chunk_rows):
        out[start : start + chunk_rows] = initialization.median(opt, neighbours[start : start + chunk_rows])
    if jitter > 0 and len(out):
        # openTSNE's initialization.jitter scales by the std of the array it is given (here the
        # placed rows, so it would change with M); the same Gaussian, scaled by the map's std
        scale = jitter * float(np.std(opt[:, 0]))
        out += np.random.default_rng(seed).normal(0.0, scale, out.shape).astype(np.float32)
    return out


def placement_note(info: dict[str, Any], quality: dict[str, Any] | None = None) -> str | None:
    """The line a figure shows when only a sample was optimised (None otherwise), with the
    placed vs optimised points' 2-D kNN accuracy when ``quality`` has them."""
    if not info.get("placed_n"):
        return None
    n = info["optimised_n"] + info["placed_n"]
    text = (f"t-SNE optimised on a seeded sample of {info['optimised_n']:,} of {n:,} points, "
            f"{info['placed_n']:,} placed at the median of their {info['k_place']} nearest optimised")
    q = quality or {}
    if isinstance(q.get("knn_2d@10_placed"), float) and isinstance(q.get("knn_2d@10_optimised"), float):
        text += f" (2-D kNN@10 placed {q['knn_2d@10_placed']:.3f}, optimised {q['knn_2d@10_optimised']:.3f})"
    return text


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
    embed_sample: int | None = None,
    k_place: int = K_PLACE,
    tsne_kwargs: dict[str, Any] | None = None,
    phase: PhaseHook | None = None,
    what: str = "features",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed the (N, D) rows of ``x`` (array, memmap or ``FeatureShards``) in 2-D.

    ``embed_sample``: above this many rows only a seeded sample of them is optimised and the
    others are placed (see the module docstring); None optimises every row.
    Returns float32 coordinates and what was done (sample sizes, k, phase seconds).
    """
    from openTSNE import TSNE

    n, dim = len(x), int(x.shape[1])
    seconds: dict[str, float] = {}
    info: dict[str, Any] = {"path": "large (memory-bounded)", "phases_s": seconds}
    use_pca = bool(pca_dims) and int(pca_dims) < min(n, dim)
    with _timed("pca", seconds, phase):
        space = metric_space(x, metric, standardize, chunk_rows)
        if use_pca and n <= pca_sample:  # the sample is every row: read and map them once
            rows = project_in_chunks(x, None, chunk_rows=chunk_rows, space=space, what=what)
            pca = fit_pca(rows, int(pca_dims), seed=seed)
            rows -= pca.mean
            reduced = rows @ pca.components.T
            del rows
        else:
            pca = (fit_pca_on_sample(x, int(pca_dims), seed=seed, sample=pca_sample, space=space, what=what)
                   if use_pca else None)
            reduced = project_in_chunks(x, pca, chunk_rows=chunk_rows, space=space, what=what)
    if pca is not None:
        info.update(pca_sample=pca.sample_n, pca_explained_variance=pca.explained_variance_ratio)
    sampled = embed_sample is not None and n > int(embed_sample)
    opt_rows = sample_indices(n, int(embed_sample), seed, OPTIMISED_STREAM) if sampled else None
    m = n if opt_rows is None else opt_rows.size
    k = min(m - 1, int(3 * perplexity))
    place_rows = place_nb = None
    with _timed("knn", seconds, phase):
        if opt_rows is None:
            indices, distances = knn_graph(reduced, k, method=neighbors, n_trees=n_trees, seed=seed,
                                           n_jobs=n_jobs)
        else:
            sample = reduced[opt_rows]  # the optimised rows only (embed_sample × pca_dims)
            index = knn_index(sample, k, method=neighbors, n_trees=n_trees, seed=seed, n_jobs=n_jobs)
            indices, distances = build_knn(index)
            with _timed("knn of placed rows", seconds, phase):
                keep = np.ones(n, dtype=bool)
                keep[opt_rows] = False
                place_rows = np.flatnonzero(keep)
                del keep
                place_nb = query_in_chunks(index, reduced, place_rows, int(k_place), n_jobs=n_jobs,
                                           chunk_rows=chunk_rows, search_k=max(PLACE_SEARCH_K, n_trees * int(k_place)))
            del index
            reduced = sample
    with _timed("affinities", seconds, phase):
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
    if opt_rows is None:
        return coords, info
    with _timed("placement", seconds, phase):
        placed = place_points(coords, place_nb, seed=seed)
        full = np.empty((n, 2), dtype=np.float32)
        full[opt_rows] = coords
        full[place_rows] = placed
        del placed, place_nb
    info.update(embed_sample=int(embed_sample), optimised_n=int(m), placed_n=int(n - m),
                placement=PLACEMENT, k_place=int(k_place), place_jitter=PLACE_JITTER,
                place_search_k=max(PLACE_SEARCH_K, n_trees * int(k_place)) if neighbors == "annoy" else None,
                optimised_rows_seed=[int(seed), OPTIMISED_STREAM])
    log.warning("t-SNE optimised a seeded sample of %d of %d points; the other %d were placed at the "
                "median of their %d nearest optimised points (openTSNE initialization.median), not "
                "optimised (task.embed_sample=%d; null optimises every point)", m, n, n - m, k_place,
                embed_sample)
    return full, info


def optimised_mask(n: int, info: dict[str, Any]) -> np.ndarray | None:
    """Boolean (n,) mask of the rows the t-SNE optimised when ``info`` (``embed_large``'s)
    says a sample was placed around; None when every row was optimised."""
    if not info.get("placed_n"):
        return None
    mask = np.zeros(n, dtype=bool)
    seed, stream = info["optimised_rows_seed"]
    mask[sample_indices(n, int(info["embed_sample"]), int(seed), int(stream))] = True
    return mask
