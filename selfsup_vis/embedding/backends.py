"""2-D embedding backends: openTSNE (default), sklearn t-SNE (MMSelfSup's settings), PCA, UMAP,
and t-SNE in torch (``embedding.tsne_torch``; the default when CUDA is available).

Every backend is seeded, checks its input (NaN/inf rows are an error, never embedded silently)
and adapts the perplexity to small sample counts. ``embed`` returns the (N, 2) coordinates;
``compute_embedding`` also returns the parameters that were actually used (after defaults,
fallbacks and perplexity lowering) so that a run can record them next to the coordinates.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

import numpy as np
import torch

from selfsup_vis.config.schemas import EmbeddingConfig as _SCHEMA
from selfsup_vis.config.schemas import SubsetConfig as _SUBSET
from selfsup_vis.embedding.large import EMBED_SAMPLE, K_PLACE, LARGE_N, PhaseHook, embed_large
from selfsup_vis.embedding.space import describe_space, to_metric_space
from selfsup_vis.embedding.tsne_torch import TorchTSNEParams, tsne_torch

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("opentsne", "sklearn", "pca", "umap", "torch")
MIN_SAMPLES = 4

# MMSelfSup's visualize_tsne.py settings (sklearn.manifold.TSNE); its perplexity (30) and
# early exaggeration (12) are the schema's defaults (config.schemas.EmbeddingConfig)
MMSELFSUP_TSNE: dict[str, Any] = {
    "learning_rate": 200.0,
    "n_iter": 1000,
    "n_iter_without_progress": 300,
    "init": "random",
}

# Tuned with scripts/bench_tsne.py on 2048-d clustered features (50 classes): same
# trustworthiness and 2-D kNN accuracy as MMSelfSup's sklearn run at a fraction of the time.
# What the time goes to, and why each value:
# - pca_dims 100 (randomized PCA, 2 power iterations): PCA-50 lost ~2 points of 2-D kNN accuracy
#   on 50 classes; 100 keeps it within a point of no PCA at all, and the kNN search stays cheap.
# - annoy with 10 trees (openTSNE uses 50): ~3x faster neighbour search; recall ~0.9, which
#   changes neither trustworthiness nor kNN accuracy measurably.
# - 100 early-exaggeration + 150 iterations (openTSNE: 250 + 500) with learning rate N/12 then
#   N: the numbers are the same as after 250 + 500 (converged). Re-measured with
#   scripts/bench_scale.py's 100-class mixture at 50k × 2048 on one kNN graph (20k-point quality
#   subsample): 125 + 250 trust 0.9833 / 2-D kNN@10 0.9391, 100 + 150 0.9834 / 0.9386,
#   75 + 125 0.9834 / 0.9385 — a third fewer iterations than before at no measurable cost.
# - ints_in_interval 2 (openTSNE: 1): the FFT grid for the repulsive forces grows with the
#   embedding's extent; half as many intervals per axis makes each late iteration ~2x cheaper
#   at no measurable cost in quality.
OPENTSNE_DEFAULTS: dict[str, Any] = {
    "pca_dims": 100,
    "early_exaggeration_iter": 100,
    "n_iter": 150,
    "learning_rate": "auto",
    "init": "pca",
    "neighbors": "annoy",
    "annoy_trees": 10,
    "n_interpolation_points": 3,
    "ints_in_interval": 2,
    "min_num_intervals": 50,
    "k_place": K_PLACE,  # large N above embed_sample: placed rows go to the median of k optimised
}

UMAP_DEFAULTS: dict[str, Any] = {"pca_dims": 50, "n_neighbors": 15, "min_dist": 0.1}


class EmbeddingWarning(UserWarning):
    """Something about an embedding request was adjusted (perplexity lowered, backend fallback)."""


def _warn(msg: str) -> None:
    log.warning(msg)
    warnings.warn(msg, EmbeddingWarning, stacklevel=3)


def has_opentsne() -> bool:
    return importlib.util.find_spec("openTSNE") is not None


def has_umap() -> bool:
    return importlib.util.find_spec("umap") is not None


@dataclass
class EmbedParams:
    """Everything that determines an embedding. ``None`` means "the backend's default".

    backend: "auto" (torch when CUDA is available, else openTSNE when installed, else
      sklearn), "opentsne", "sklearn", "pca", "umap", "torch" (``extra``: ``device``,
      ``exact_max_n``, ``n_interpolation_points``, ``ints_in_interval``, ``min_num_intervals``).
    pca_dims: PCA pre-reduction before t-SNE / UMAP (None or 0 = off; "auto" = backend default:
      100 for openTSNE, 50 for UMAP, off for sklearn as in MMSelfSup).
    n_iter: iterations after early exaggeration for openTSNE, total iterations for sklearn
      (MMSelfSup: 1000), epochs for UMAP.
    early_exaggeration_iter: openTSNE only (sklearn fixes it at 250).
    metric / standardize: the space everything is computed in (see ``embedding.space``):
      "cosine" (default, rows L2-normalised first) or "euclidean"; standardize z-scores every
      dimension first. ``init`` may also be an (N, 2) array (a shared initialisation).
    Defaults are the schema's (``config.schemas.EmbeddingConfig``), written there only.
    extra: backend-specific keyword arguments passed through (e.g. openTSNE
      ``n_interpolation_points``, UMAP ``min_dist``).
    """

    backend: str = _SCHEMA.backend.value
    seed: int = _SUBSET.seed
    perplexity: float = _SCHEMA.perplexity
    pca_dims: int | str | None = _SCHEMA.pca_dims
    n_iter: int | None = _SCHEMA.n_iter
    early_exaggeration_iter: int | None = None
    learning_rate: float | str | None = _SCHEMA.learning_rate
    init: str | np.ndarray | None = None
    early_exaggeration: float = _SCHEMA.early_exaggeration
    n_jobs: int = _SCHEMA.n_jobs
    extra: dict[str, Any] = field(default_factory=dict)
    metric: str = _SCHEMA.metric.value
    standardize: bool = _SCHEMA.standardize
    large_n: int | None = LARGE_N  # from this N on: the memory-bounded path (embedding.large)
    embed_sample: int | None = EMBED_SAMPLE  # large path: optimise this many rows, place the rest

    @classmethod
    def from_config(cls, node: Any, *, init: str | np.ndarray | None = None) -> EmbedParams:
        """The parameters a task node asks for: every field of this class that the node has
        (``config.schemas.EmbeddingConfig`` and ``TsneTaskConfig``'s large-N keys, already
        type-checked when Hydra composed them), taken as they are; ``init`` is the backend's
        initialisation (a name, a shared (N, 2) array, or None for the backend's default)."""
        own = {f.name for f in fields(cls)} - {"init", "extra"}
        return cls(**{k: _plain(node[k]) for k in own if k in node}, init=init)


def _plain(x: Any) -> Any:
    return x.value if isinstance(x, Enum) else x


@dataclass
class EmbeddingResult:
    coords: np.ndarray
    params: dict[str, Any]
    seconds: float


def check_features(features: np.ndarray, *, what: str = "features") -> np.ndarray:
    """Return ``features`` as a 2-D float array; raise on bad shape or NaN/inf rows."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
        raise ValueError(
            f"{what} contain NaN or inf values in {bad.size} of {x.shape[0]} rows "
            f"(row indices: {shown}); nothing was embedded. Check the model/layer that "
            "produced them (e.g. fp16 overflow) or drop those samples."
        )
    return x


def perplexity_note(n: int, requested: float, used: float) -> str | None:
    """Why the perplexity was lowered (for the figure footer and summary.json), or None."""
    if used == requested:
        return None
    return f"perplexity {requested:g} → {used:.3g}: n={n} needs perplexity < n/3"


def effective_perplexity(n: int, perplexity: float) -> float:
    """Perplexity usable with ``n`` samples: lowered to (n-1)/3 when n <= 3 * perplexity."""
    if perplexity <= 0:
        raise ValueError(f"perplexity must be > 0, got {perplexity}")
    if n <= 3 * perplexity:
        new = (n - 1) / 3.0
        _warn(
            f"only {n} samples for perplexity {perplexity:g} (needs more than {3 * perplexity:g}); "
            f"using perplexity {new:.3g} = (n-1)/3 instead"
        )
        return new
    return float(perplexity)


METHOD_NAMES = {"opentsne": "t-SNE", "sklearn": "t-SNE", "torch": "t-SNE", "umap": "UMAP", "pca": "PCA"}
BACKEND_NAMES = {"opentsne": "openTSNE", "sklearn": "sklearn", "torch": "torch", "umap": "umap-learn",
                 "pca": "sklearn"}


def _iterations(used: dict[str, Any]) -> str:
    """The iterations a backend actually ran, as a reader counts them."""
    b, n_iter = used["backend"], used.get("n_iter")
    if b in ("opentsne", "torch"):
        return f"{used.get('early_exaggeration_iter')} + {n_iter} iterations (early exaggeration + rest)"
    if b == "sklearn":
        return f"{n_iter} iterations (250 of early exaggeration)"
    if b == "umap":
        epochs = (used.get("extra") or {}).get("n_epochs")
        return f"{epochs} epochs" if epochs else "umap-learn's epochs (500 below 10,000 points, else 200)"
    return ""


def describe_method(used: dict[str, Any]) -> dict[str, Any]:
    """How a map was made, from ``compute_embedding``'s parameters: ``method`` (t-SNE / UMAP /
    PCA), ``backend``, the effective ``perplexity`` and ``perplexity_note`` (why it was
    lowered), ``iterations``, the metric ``space`` and ``text``, the one line every figure's
    footer carries."""
    b = used["backend"]
    out: dict[str, Any] = {"method": METHOD_NAMES[b], "backend": b, "space": used["space"]}
    parts = [f"{METHOD_NAMES[b]} ({BACKEND_NAMES[b]})"]
    if METHOD_NAMES[b] == "t-SNE":
        out["perplexity"] = float(used["perplexity"])
        out["perplexity_note"] = used.get("perplexity_note")
        parts.append(out["perplexity_note"] or f"perplexity {used['perplexity']:.3g}")
    if b == "umap":
        ex = used.get("extra") or {}
        parts.append(f"n_neighbors {ex.get('n_neighbors')}, min_dist {ex.get('min_dist')}")
    if (it := _iterations(used)):
        out["iterations"] = it
        parts.append(it)
    if used.get("pca_dims"):
        parts.append(f"PCA-{used['pca_dims']} first")
    parts.append(f"space: {used['space']}")
    out["text"] = " · ".join(parts)
    return out


def resolve_backend(backend: str) -> str:
    """Map "auto" to the best backend here (torch on CUDA, else openTSNE, else sklearn); fall
    back from openTSNE to sklearn."""
    b = backend.lower()
    if b == "auto":
        if torch.cuda.is_available():
            return "torch"
        return "opentsne" if has_opentsne() else "sklearn"
    if b not in BACKENDS:
        raise ValueError(
            f"unknown embedding backend {backend!r}; choose one of {BACKENDS} or 'auto'"
        )
    if b == "opentsne" and not has_opentsne():
        _warn(
            "backend 'opentsne' requested but openTSNE is not installed "
            "(pip install 'selfsup-vis[fast]'); falling back to sklearn t-SNE, which is much slower"
        )
        return "sklearn"
    if b == "umap" and not has_umap():
        raise ImportError(
            "backend 'umap' needs umap-learn, which is not installed; "
            "install the 'fast' extra: pip install 'selfsup-vis[fast]'"
        )
    return b


THREADS_FROM_N = 10_000  # below this, openTSNE's threads cost more than they save


def _n_jobs(n_jobs: int, n: int | None = None) -> int:
    """Threads for a backend; one below ``THREADS_FROM_N`` points, where thread start-up and
    synchronisation dominate (measured with openTSNE, 2 cores, one busy: 96 points 1.1 s on one
    thread vs 8.3 s on two, 5000 points 7.6 s vs 12.2 s)."""
    if n_jobs is None or n_jobs == 0 or (n is not None and n < THREADS_FROM_N):
        return 1
    if n_jobs < 0:
        import os

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cpus or 1) + 1 + n_jobs)
    return n_jobs


def pca_reduce(x: np.ndarray, dims: int | None, *, seed: int) -> np.ndarray:
    """PCA to ``dims`` components (seeded); a no-op when off or not smaller than the data."""
    if not dims or dims >= min(x.shape):
        return x
    from sklearn.decomposition import PCA

    if min(x.shape) > 500 and dims < 0.8 * min(x.shape):
        # two power iterations are plenty for a pre-reduction and 2-3x faster than the default
        pca = PCA(int(dims), svd_solver="randomized", iterated_power=2, random_state=seed)
    else:
        pca = PCA(n_components=int(dims), random_state=seed)
    return pca.fit_transform(x)


def _embed_sklearn(x: np.ndarray, p: EmbedParams, used: dict[str, Any]) -> np.ndarray:
    from sklearn.manifold import TSNE

    n_iter = p.n_iter if p.n_iter is not None else MMSELFSUP_TSNE["n_iter"]
    lr = p.learning_rate if p.learning_rate is not None else MMSELFSUP_TSNE["learning_rate"]
    init = p.init if p.init is not None else MMSELFSUP_TSNE["init"]
    kwargs: dict[str, Any] = {
        "n_components": 2,
        "perplexity": p.perplexity,
        "early_exaggeration": p.early_exaggeration,
        "learning_rate": lr,
        "n_iter_without_progress": p.extra.get(
            "n_iter_without_progress", MMSELFSUP_TSNE["n_iter_without_progress"]
        ),
        "init": init,
        "random_state": p.seed,
        "n_jobs": _n_jobs(p.n_jobs, x.shape[0]),
    }
    # sklearn 1.5 renamed n_iter to max_iter and 1.7 removed n_iter
    iter_arg = "max_iter" if "max_iter" in inspect.signature(TSNE.__init__).parameters else "n_iter"
    kwargs[iter_arg] = n_iter
    kwargs.update({k: v for k, v in p.extra.items() if k != "n_iter_without_progress"})
    used.update(n_iter=n_iter, learning_rate=lr, init=init)
    return TSNE(**kwargs).fit_transform(x)


def _embed_opentsne(x: np.ndarray, p: EmbedParams, used: dict[str, Any]) -> np.ndarray:
    from openTSNE import TSNE

    d = OPENTSNE_DEFAULTS
    extra = dict(p.extra)
    n_iter = p.n_iter if p.n_iter is not None else d["n_iter"]
    ee_iter = p.early_exaggeration_iter
    if ee_iter is None:
        ee_iter = d["early_exaggeration_iter"]
    lr = p.learning_rate if p.learning_rate is not None else d["learning_rate"]
    init = p.init if p.init is not None else d["init"]
    kwargs: dict[str, Any] = {
        "n_interpolation_points": d["n_interpolation_points"],
        "ints_in_interval": d["ints_in_interval"],
        "min_num_intervals": d["min_num_intervals"],
    }
    kwargs.update(extra)
    if x.shape[0] < 1000:
        # exact neighbours and Barnes-Hut are faster than annoy / FFT grids for tiny N
        kwargs.setdefault("neighbors", "exact")
        kwargs.setdefault("negative_gradient_method", "bh")
    kwargs.setdefault("neighbors", d["neighbors"])
    kwargs.setdefault("negative_gradient_method", "fft")
    if kwargs["neighbors"] == "annoy" and "knn_kwargs" not in kwargs:
        kwargs["knn_kwargs"] = {"n_trees": d["annoy_trees"]}
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    affinity = importlib.import_module("openTSNE.affinity")
    tsne = TSNE(
        n_components=2,
        perplexity=p.perplexity,
        learning_rate=lr,
        early_exaggeration=p.early_exaggeration,
        early_exaggeration_iter=ee_iter,
        n_iter=n_iter,
        initialization=init,
        n_jobs=_n_jobs(p.n_jobs, x.shape[0]),
        random_state=p.seed,
        **kwargs,
    )
    used.update(n_iter=n_iter, early_exaggeration_iter=ee_iter, learning_rate=lr, init=init,
                n_jobs=_n_jobs(p.n_jobs, x.shape[0]))
    used["extra"] = {**kwargs}
    # openTSNE's get_knn_index imports pynndescent (numba: 1-2.5 s on a cold start, more than a
    # small t-SNE takes) only to ask whether it is installed, whatever ``neighbors`` says; the
    # import system answers the same question without importing it
    probe = affinity.is_package_installed
    affinity.is_package_installed = lambda name: importlib.util.find_spec(name) is not None
    try:
        return np.asarray(tsne.fit(x64))
    finally:
        affinity.is_package_installed = probe


def _embed_torch(x: np.ndarray, p: EmbedParams, used: dict[str, Any]) -> np.ndarray:
    """t-SNE in torch with the openTSNE defaults' schedule (``embedding.tsne_torch``); the PCA
    pre-reduction runs there too, on the device."""
    d = OPENTSNE_DEFAULTS
    extra = dict(p.extra)
    known = ("device", "exact_max_n", "n_interpolation_points", "ints_in_interval", "min_num_intervals")
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise ValueError(f"backend 'torch': unknown option(s) {unknown}; valid: {list(known)}")
    tp = TorchTSNEParams(
        perplexity=p.perplexity,
        early_exaggeration=p.early_exaggeration,
        early_exaggeration_iter=(p.early_exaggeration_iter if p.early_exaggeration_iter is not None
                                 else d["early_exaggeration_iter"]),
        n_iter=p.n_iter if p.n_iter is not None else d["n_iter"],
        learning_rate=p.learning_rate if p.learning_rate is not None else "auto",
        pca_dims=int(p.pca_dims) if p.pca_dims else None,
        init=p.init if p.init is not None else d["init"],
        seed=p.seed,
        **extra,
    )
    coords, info = tsne_torch(x, tp)
    used.update(n_iter=tp.n_iter, early_exaggeration_iter=tp.early_exaggeration_iter,
                learning_rate=tp.learning_rate,
                init=tp.init if isinstance(tp.init, str) else f"given array {tp.init.shape}")
    used["pca_dims"] = tp.pca_dims if tp.pca_dims and tp.pca_dims < min(x.shape) else None
    used["torch"] = info
    return coords


def _embed_umap(x: np.ndarray, p: EmbedParams, used: dict[str, Any]) -> np.ndarray:
    import umap

    n = x.shape[0]
    kwargs: dict[str, Any] = {
        "n_neighbors": min(UMAP_DEFAULTS["n_neighbors"], n - 1),
        "min_dist": UMAP_DEFAULTS["min_dist"],
    }
    kwargs.update(p.extra)
    if p.n_iter is not None:
        kwargs["n_epochs"] = p.n_iter
    if p.init is not None:
        kwargs["init"] = p.init
    elif n < 16:
        kwargs["init"] = "random"  # spectral init needs more points than neighbours
    if p.learning_rate is not None and not isinstance(p.learning_rate, str):
        kwargs["learning_rate"] = p.learning_rate
    # a random_state makes UMAP single-threaded but reproducible, which is what we promise
    reducer = umap.UMAP(n_components=2, random_state=p.seed, **kwargs)
    used["extra"] = dict(kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return np.asarray(reducer.fit_transform(x))


def _embed_pca(x: np.ndarray, p: EmbedParams, used: dict[str, Any]) -> np.ndarray:
    from sklearn.decomposition import PCA

    if x.shape[1] == 1:
        return np.concatenate([x - x.mean(axis=0), np.zeros_like(x)], axis=1)
    return PCA(n_components=2, random_state=p.seed).fit_transform(x)


_RUNNERS = {
    "sklearn": _embed_sklearn,
    "opentsne": _embed_opentsne,
    "umap": _embed_umap,
    "pca": _embed_pca,
    "torch": _embed_torch,
}


def compute_embedding(features: np.ndarray, params: EmbedParams | None = None, *,
                      phase: PhaseHook | None = None) -> EmbeddingResult:
    """Embed ``features`` (N, D) in 2-D with ``params``; also report the parameters used.

    From ``params.large_n`` rows on (openTSNE only) the memory-bounded path of
    ``embedding.large`` runs instead: ``features`` may then be a memmap or ``FeatureShards``
    and is read in chunks, never copied whole; ``phase`` wraps each of its phases.
    """
    p = replace(params) if params is not None else EmbedParams()
    if (p.large_n is not None and len(features) >= max(p.large_n, MIN_SAMPLES)
            and resolve_backend(p.backend) == "opentsne" and not isinstance(p.init, np.ndarray)):
        return _compute_large(features, p, phase)
    x = to_metric_space(check_features(features), p.metric, p.standardize)
    n = x.shape[0]
    backend = resolve_backend(p.backend)
    min_n = 2 if backend == "pca" else MIN_SAMPLES
    if n < min_n:
        raise ValueError(
            f"need at least {min_n} samples to embed with {backend!r}, got {n}; "
            "use more samples (e.g. more images per class)"
        )
    p.backend = backend
    requested = float(p.perplexity)
    if backend in ("sklearn", "opentsne", "torch"):
        p.perplexity = effective_perplexity(n, p.perplexity)
    if p.pca_dims == "auto":
        p.pca_dims = {
            "opentsne": OPENTSNE_DEFAULTS["pca_dims"],
            "torch": OPENTSNE_DEFAULTS["pca_dims"],
            "umap": UMAP_DEFAULTS["pca_dims"],
        }.get(backend)
    elif isinstance(p.pca_dims, str):
        raise ValueError(f"pca_dims must be an int, None or 'auto', got {p.pca_dims!r}")
    init_array = p.init if isinstance(p.init, np.ndarray) else None
    if init_array is not None:
        p.init = None  # not in asdict's copy: recorded as a description below
    used = asdict(p)
    if init_array is not None:
        p.init = init_array
        used["init"] = f"given array {init_array.shape}"
    used["space"] = describe_space(p.metric, p.standardize)
    used["n"] = n
    used["input_dim"] = x.shape[1]
    used["perplexity_requested"] = requested
    used["perplexity_note"] = perplexity_note(n, requested, float(p.perplexity))
    start = time.perf_counter()
    if backend not in ("pca", "torch"):  # torch reduces on its own device
        dim_before = x.shape[1]
        x = pca_reduce(x, p.pca_dims, seed=p.seed)
        used["pca_dims"] = x.shape[1] if p.pca_dims and x.shape[1] < dim_before else None  # None: no-op
    elif backend == "pca":
        used["pca_dims"] = None
    coords = _RUNNERS[backend](x, p, used)
    if init_array is not None:
        used["init"] = f"given array {init_array.shape}"
    used["description"] = describe_method(used)
    seconds = time.perf_counter() - start
    coords = np.asarray(coords, dtype=np.float32)
    if coords.shape != (n, 2) or not np.isfinite(coords).all():
        raise RuntimeError(
            f"backend {backend!r} returned an invalid embedding (shape {coords.shape}, "
            f"finite: {bool(np.isfinite(coords).all())})"
        )
    return EmbeddingResult(coords=coords, params=used, seconds=seconds)


def _compute_large(features, p: EmbedParams, phase: PhaseHook | None) -> EmbeddingResult:
    """openTSNE's defaults of ``_embed_opentsne`` on the memory-bounded path."""
    if len(features.shape) != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {features.shape}")
    n, d = len(features), int(features.shape[1])
    od = OPENTSNE_DEFAULTS
    p.backend = "opentsne"
    requested = float(p.perplexity)
    p.perplexity = effective_perplexity(n, p.perplexity)
    if p.pca_dims == "auto":
        p.pca_dims = od["pca_dims"]
    elif isinstance(p.pca_dims, str):
        raise ValueError(f"pca_dims must be an int, None or 'auto', got {p.pca_dims!r}")
    extra = dict(p.extra)
    k_place = int(extra.pop("k_place", od["k_place"]))
    neighbors = extra.pop("neighbors", od["neighbors"])
    n_trees = extra.pop("knn_kwargs", {}).get("n_trees", od["annoy_trees"])
    tsne_kwargs = {k: od[k] for k in ("n_interpolation_points", "ints_in_interval", "min_num_intervals")}
    tsne_kwargs.update({k: v for k, v in extra.items() if k not in ("negative_gradient_method",)})
    used = asdict(p)
    used.update(
        n_iter=p.n_iter if p.n_iter is not None else od["n_iter"],
        early_exaggeration_iter=(p.early_exaggeration_iter if p.early_exaggeration_iter is not None
                                 else od["early_exaggeration_iter"]),
        learning_rate=p.learning_rate if p.learning_rate is not None else od["learning_rate"],
        init=p.init if p.init is not None else od["init"],
        space=describe_space(p.metric, p.standardize), n=n, input_dim=d,
        pca_dims=int(p.pca_dims) if p.pca_dims and int(p.pca_dims) < min(n, d) else None,
        extra={"neighbors": neighbors, "knn_kwargs": {"n_trees": n_trees}, "k_place": k_place, **tsne_kwargs},
        perplexity_requested=requested, perplexity_note=perplexity_note(n, requested, float(p.perplexity)),
    )
    used["description"] = describe_method(used)
    start = time.perf_counter()
    coords, info = embed_large(
        features, perplexity=p.perplexity, seed=p.seed, pca_dims=used["pca_dims"], n_iter=used["n_iter"],
        early_exaggeration_iter=used["early_exaggeration_iter"], early_exaggeration=p.early_exaggeration,
        learning_rate=used["learning_rate"], init=used["init"], n_jobs=_n_jobs(p.n_jobs), metric=p.metric,
        standardize=p.standardize, neighbors=neighbors, n_trees=n_trees, tsne_kwargs=tsne_kwargs, phase=phase,
        embed_sample=p.embed_sample, k_place=k_place,
    )  # fmt: skip
    used["large"] = info
    if coords.shape != (n, 2) or not np.isfinite(coords).all():
        raise RuntimeError(f"the large-N path returned an invalid embedding (shape {coords.shape})")
    return EmbeddingResult(coords=coords, params=used, seconds=time.perf_counter() - start)
