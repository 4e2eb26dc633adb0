"""Comparing representations: Procrustes alignment of 2-D maps and linear CKA between layers.

- :func:`procrustes_align`: orthogonal Procrustes (Schönemann 1966). t-SNE / UMAP maps are only
  defined up to rotation, reflection, translation and scale, so two maps of the same samples
  are put side by side after mapping one onto the other with the orthogonal matrix (reflections
  allowed), translation and optional isotropic scale that minimise the squared distances.
- :func:`linear_cka`: linear Centered Kernel Alignment (Kornblith et al., ICML 2019) of two
  feature matrices of the same samples, ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) on centred features:
  1 for identical features, invariant to orthogonal transforms and isotropic scaling.
  Computed in float64 from the (D×D) cross-products, accumulated in row chunks, so memory is
  bounded by the feature widths, not by N.
- :func:`minibatch_cka`: the unbiased minibatch estimator of Nguyen et al. (ICLR 2021): mean
  unbiased HSIC (Song et al. 2012) over seeded minibatches, for very large N.
- :func:`cka_matrix`: every pair of layers of two models.
- :func:`shared_init` and :func:`align_maps`: what ``task=compare_embeddings`` does with them:
  every map starts from one layout and is aligned onto the first model's panel map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from selfsup_vis.embedding.space import to_metric_space

EXACT_CKA_MAX_N = 50_000
_CHUNK = 8192
INIT_STD = 1e-4  # openTSNE rescales its PCA initialisation to this standard deviation


def shared_init(feats: np.ndarray, metric: str, standardize: bool, mode: str, seed: int) -> np.ndarray:
    """One (N, 2) starting layout for every map of a comparison: PCA of the reference features
    (in the metric space) or a seeded Gaussian, scaled to openTSNE's standard deviation."""
    from sklearn.decomposition import PCA

    if mode == "random":
        init = np.random.default_rng(seed).normal(size=(feats.shape[0], 2))
    else:
        x = to_metric_space(np.asarray(feats, dtype=np.float32), metric, standardize)
        init = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, x]
    init = init - init.mean(axis=0)
    return (init / max(float(init[:, 0].std()), 1e-12) * INIT_STD).astype(np.float32)


def align_maps(maps: Mapping[str, np.ndarray], reference: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every map of ``maps`` (by layer) Procrustes-aligned onto ``reference`` (reflections and
    an isotropic scale allowed), and the RMS residual of each."""
    aligned, residuals = {}, {}
    for layer, xy in maps.items():
        pr = procrustes_align(xy, reference, scaling=True, reflection=True)
        aligned[layer], residuals[layer] = pr.aligned.astype(np.float32), pr.residual
    return aligned, residuals


@dataclass
class ProcrustesResult:
    """``aligned = scale * (source - source_mean) @ rotation + target_mean``."""

    aligned: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    residual: float  # RMS distance between aligned and target


def procrustes_align(source: np.ndarray, target: np.ndarray, *, scaling: bool = True,
                     reflection: bool = True) -> ProcrustesResult:
    """Map ``source`` (N, d) onto ``target`` (N, d) by an orthogonal matrix (a rotation, or
    with ``reflection`` also a reflection), a translation and, with ``scaling``, an isotropic
    scale; R = U Vᵀ from the SVD of A_cᵀ B_c (centred source A, target B)."""
    a = np.asarray(source, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"procrustes_align: source {a.shape} and target {b.shape} must be equal (N, d) shapes")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("procrustes_align: NaN/inf in the coordinates")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ac, bc = a - mu_a, b - mu_b
    u, sv, vt = np.linalg.svd(ac.T @ bc)
    if not reflection and np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
        sv[-1] *= -1
    rot = u @ vt
    norm_a = float((ac * ac).sum())
    scale = float(sv.sum() / norm_a) if scaling and norm_a > 0 else 1.0
    aligned = scale * ac @ rot + mu_b
    residual = float(np.sqrt(((aligned - b) ** 2).sum(axis=1).mean()))
    return ProcrustesResult(aligned, rot, scale, mu_b - scale * mu_a @ rot, residual)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs two 2-D feature matrices of the same samples, got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 samples")


def _column_means(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1], dtype=np.float64)
    for s in range(0, x.shape[0], _CHUNK):
        total += np.asarray(x[s : s + _CHUNK], dtype=np.float64).sum(axis=0)
    return total / x.shape[0]


def _self_norm(x: np.ndarray, mean: np.ndarray) -> float:
    """‖XᵀX‖_F of the centred features (accumulated over row chunks)."""
    xx = np.zeros((x.shape[1], x.shape[1]))
    for s in range(0, x.shape[0], _CHUNK):
        xc = np.asarray(x[s : s + _CHUNK], dtype=np.float64) - mean
        xx += xc.T @ xc
    return float(np.linalg.norm(xx))


def _cross(x: np.ndarray, mx: np.ndarray, y: np.ndarray, my: np.ndarray) -> float:
    """‖YᵀX‖_F² of the centred features (accumulated over row chunks)."""
    yx = np.zeros((y.shape[1], x.shape[1]))
    for s in range(0, x.shape[0], _CHUNK):
        xc = np.asarray(x[s : s + _CHUNK], dtype=np.float64) - mx
        yc = np.asarray(y[s : s + _CHUNK], dtype=np.float64) - my
        yx += yc.T @ xc
    return float((yx * yx).sum())


def _ratio(cross: float, nx: float, ny: float) -> float:
    return float(cross / (nx * ny)) if nx > 0 and ny > 0 else float("nan")


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of features ``x`` (N, p) and ``y`` (N, q) of the same N samples; NaN when one
    of them is constant (no variance to align)."""
    x, y = np.asarray(x), np.asarray(y)
    _check_pair(x, y)
    mx, my = _column_means(x), _column_means(y)
    return _ratio(_cross(x, mx, y, my), _self_norm(x, mx), _self_norm(y, my))


def unbiased_hsic(k: np.ndarray, m: np.ndarray) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of two (n, n) kernel matrices, n >= 4."""
    n = k.shape[0]
    if n < 4:
        raise ValueError("unbiased HSIC needs at least 4 samples per batch")
    kt = k.copy()
    mt = m.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(mt, 0.0)
    ones_k = kt.sum(axis=0)
    ones_m = mt.sum(axis=0)
    term = (kt * mt).sum() + ones_k.sum() * ones_m.sum() / ((n - 1) * (n - 2)) - 2.0 * (ones_k @ ones_m) / (n - 2)
    return float(term / (n * (n - 3)))


def minibatch_cka(x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024, seed: int = 0) -> float:
    """Minibatch linear CKA (Nguyen et al. 2021): mean unbiased HSIC(K, L) over seeded
    minibatches / sqrt(mean HSIC(K, K) · mean HSIC(L, L)); batches smaller than 4 are dropped."""
    x, y = np.asarray(x), np.asarray(y)
    _check_pair(x, y)
    order = np.random.default_rng(seed).permutation(x.shape[0])
    kl = kk = ll = 0.0
    for s in range(0, len(order), batch_size):
        idx = np.sort(order[s : s + batch_size])
        if len(idx) < 4:
            continue
        xb = np.asarray(x[idx], dtype=np.float64)
        yb = np.asarray(y[idx], dtype=np.float64)
        k, m = xb @ xb.T, yb @ yb.T
        kl += unbiased_hsic(k, m)
        kk += unbiased_hsic(k, k)
        ll += unbiased_hsic(m, m)
    if kk <= 0 or ll <= 0:
        return float("nan")
    return float(kl / np.sqrt(kk * ll))


def cka(x: np.ndarray, y: np.ndarray, *, method: str = "auto", batch_size: int = 1024, seed: int = 0) -> float:
    """Linear CKA: ``exact`` (:func:`linear_cka`), ``minibatch`` or ``auto`` (exact up to
    ``EXACT_CKA_MAX_N`` samples)."""
    if method == "auto":
        method = "exact" if np.asarray(x).shape[0] <= EXACT_CKA_MAX_N else "minibatch"
    if method == "exact":
        return linear_cka(x, y)
    if method == "minibatch":
        return minibatch_cka(x, y, batch_size=batch_size, seed=seed)
    raise ValueError(f"CKA method {method!r}: expected 'auto', 'exact' or 'minibatch'")


def cka_matrix(feats_a: Sequence[np.ndarray], feats_b: Sequence[np.ndarray], *, method: str = "auto",
               batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """CKA between every layer of model A (rows) and every layer of model B (columns); the exact
    path computes each layer's mean and ‖XᵀX‖_F once."""
    n = np.asarray(feats_a[0]).shape[0] if len(feats_a) else 0
    if method == "auto":
        method = "exact" if n <= EXACT_CKA_MAX_N else "minibatch"
    out = np.empty((len(feats_a), len(feats_b)))
    if method != "exact":
        for i, fa in enumerate(feats_a):
            for j, fb in enumerate(feats_b):
                out[i, j] = cka(fa, fb, method=method, batch_size=batch_size, seed=seed)
        return out
    for f in (*feats_a, *feats_b):
        _check_pair(np.asarray(feats_a[0]), np.asarray(f))
    stats_a = [(m := _column_means(f), _self_norm(f, m)) for f in feats_a]
    stats_b = [(m := _column_means(f), _self_norm(f, m)) for f in feats_b]
    for i, (fa, (ma, na)) in enumerate(zip(feats_a, stats_a)):
        for j, (fb, (mb, nb)) in enumerate(zip(feats_b, stats_b)):
            out[i, j] = _ratio(_cross(fa, ma, fb, mb), na, nb)
    return out
