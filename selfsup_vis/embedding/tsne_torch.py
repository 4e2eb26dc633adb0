"""t-SNE in torch (``task.backend=torch``): the project's openTSNE schedule on the GPU.

Same maths and the same schedule as the openTSNE default of ``embedding.backends`` (openTSNE
1.0's gradient, which omits the factor 4 of sklearn's, with its learning rate "auto"), so that
a run on a GPU gives the picture a CPU run would:

- **PCA** to ``pca_dims`` (exact: eigen-decomposition of the D × D covariance in float64).
- **Affinities**: exact kNN (``embedding.knn``, k = 3 · perplexity) on the reduced rows;
  Gaussian bandwidths by a binary search over all rows at once (openTSNE's
  ``compute_gaussian_perplexity``: squared distances, entropy in nats against log(perplexity));
  P = (P + Pᵀ) / 2, normalised to sum 1, kept as row-sorted edges.
- **Initialisation**: openTSNE's ``pca``: the first two principal components, rescaled so the
  first has std 1e-4, plus Gaussian jitter of 1 % of that std (seeded numpy, so identical on
  every device).
- **Optimisation**: early exaggeration (12) for ``early_exaggeration_iter`` iterations with
  learning rate N/12, then ``n_iter`` iterations at exaggeration 1 with learning rate N; momentum
  0.8 in both phases (openTSNE 1.0's defaults); delta-bar-delta gains (+0.2 on a sign flip, else
  × 0.8 + 0.01), steps clipped to norm 5, the map re-centred after every step.
- **Gradient**: attraction over the sparse edges; repulsion either **exact in tiles**
  (O(N²), chunked so memory stays O(tile × N)) up to ``exact_max_n`` points, or by **FIt-SNE's
  grid interpolation** above it (Linderman et al. 2019): charges interpolated by Lagrange
  polynomials onto an equispaced grid (``n_interpolation_points`` nodes per box), the kernel
  1/(1+d²)² convolved with ``torch.fft``, potentials interpolated back. Z comes from the same
  kernel with charges (1, y, |y|²), so one convolution gives both.

Determinism: every reduction is a dense op, a sort with ``stable=True`` or a float64 cumulative
sum (segment sums by boundary differences) — no atomic scatter — so a seeded run is identical
on a given device; CPU and GPU agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from selfsup_vis.embedding.knn import knn

log = logging.getLogger(__name__)

# Above this many points the repulsion switches from exact tiles to the FFT grid. CPU, measured
# (scripts/bench_gpu.py --device cpu --crossover, one core of a shared 2-core machine): one
# exact evaluation 14 ms at 1,000 points, 69 ms at 2,000, 1.6 s at 4,000 (the tile no longer
# fits in cache); the FFT grid costs a fixed ~50 ms (at least 50 × 50 boxes × 16 nodes, float64)
# plus the points: 56 ms at a converged 2,000-point map, 91 ms / 270 ms on the benchmark's wider
# random layouts at 1,000 / 2,000. They cross near 2,000. CUDA: an estimate, NOT measured (no
# device lent yet): the tiles are bandwidth-bound at ~1e-11 s per pair (~6 ms at 25k points)
# and the FFT path costs a few ms in kernel launches at small N, so they should cross near 16k;
# `scripts/bench_gpu.py --crossover` on a GPU prints the numbers to set this from.
EXACT_MAX_N = {"cpu": 2_000, "cuda": 16_000}
TILE_PAIRS = 2**25  # exact repulsion: rows per tile = TILE_PAIRS // N (≈ 128 MiB per float32 tile)
MIN_GAIN = 0.01
MAX_STEP_NORM = 5.0
PERPLEXITY_TOL = 1e-8
PERPLEXITY_STEPS = 200


@dataclass
class TorchTSNEParams:
    """Everything the torch t-SNE uses; defaults = the project's openTSNE defaults."""

    perplexity: float = 30.0
    early_exaggeration: float = 12.0
    early_exaggeration_iter: int = 100
    n_iter: int = 150
    learning_rate: float | str = "auto"  # auto: N / exaggeration (openTSNE)
    momentum: float = 0.8
    final_momentum: float = 0.8
    pca_dims: int | None = 100
    init: str | np.ndarray = "pca"  # pca | random | an (N, 2) array
    seed: int = 0
    exact_max_n: int | None = None  # None: EXACT_MAX_N of the device type
    # FFT grid: 4 Lagrange nodes per box of width 1 (openTSNE: 3 nodes, boxes of 1; the
    # project's openTSNE runs: boxes of 2). Repulsion error against the exact sum at a converged
    # 2,000-point map (tests/test_tsne_torch.py): 3 nodes/box 2: several %, 3/1: 1.9 %,
    # 4/1: 0.5 %, 5/1: 0.16 % (and 7x the CPU time of 3/1). On a GPU the grid costs little.
    n_interpolation_points: int = 4
    min_num_intervals: int = 50
    ints_in_interval: float = 1.0
    device: str | None = None  # None: cuda when available
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Affinities:
    """Symmetric P as edges sorted by row: P[rows[e], cols[e]] = vals[e]; ``starts``: CSR row
    pointer (N + 1)."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    starts: torch.Tensor
    n: int


# ---------------------------------------------------------------------------- preprocessing


PCA_CHUNK_ROWS = 32_768


def _rows_on(x: np.ndarray | torch.Tensor, start: int, stop: int, device: torch.device) -> torch.Tensor:
    block = x[start:stop]
    block = block if isinstance(block, torch.Tensor) else torch.as_tensor(np.asarray(block))
    return block.to(device=device, dtype=torch.float32)


def pca_torch(x: np.ndarray | torch.Tensor, dims: int, device: torch.device | None = None,
              chunk_rows: int = PCA_CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection of ``x`` (host or device) on its top ``dims`` principal components, float32
    on ``device``, and their variances. ``x`` goes to the device in row chunks (two passes: the
    covariance, then the projection), so 1M × 2048 features never sit on the GPU whole. The
    covariance is accumulated in float64 around the first chunk's mean (no cancellation for
    features far from the origin, e.g. post-ReLU). Component signs are fixed so the largest
    loading is positive."""
    dev = device if device is not None else (x.device if isinstance(x, torch.Tensor) else torch.device("cpu"))
    n, d = x.shape
    shift = _rows_on(x, 0, chunk_rows, dev).to(torch.float64).mean(dim=0)
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    gram = torch.zeros(d, d, dtype=torch.float64, device=dev)
    for s in range(0, n, chunk_rows):
        b = _rows_on(x, s, s + chunk_rows, dev).to(torch.float64) - shift
        total += b.sum(dim=0)
        gram += b.T @ b
    delta = total / n
    mean = shift + delta
    cov = (gram - n * torch.outer(delta, delta)) / max(n - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True, stable=True)[:dims]
    comps = evecs[:, order]
    sign = torch.sign(comps.gather(0, comps.abs().argmax(dim=0, keepdim=True)))
    comps = (comps * torch.where(sign == 0, 1.0, sign)).to(torch.float32)
    mean32 = mean.to(torch.float32)
    out = torch.empty(n, comps.shape[1], dtype=torch.float32, device=dev)
    for s in range(0, n, chunk_rows):
        out[s : s + chunk_rows] = (_rows_on(x, s, s + chunk_rows, dev) - mean32) @ comps
    return out, evals[order]


def perplexity_calibration(dist: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Row-normalised conditional P (N, k) from neighbour distances (N, k): a binary search on
    every row's precision at once, as openTSNE's ``compute_gaussian_perplexity`` does row by
    row (squared distances; beta starts at 1, doubles/halves until bracketed, then bisects)."""
    d2 = dist.to(torch.float64) ** 2
    d2 = d2 - d2[:, :1]  # shift by the nearest distance: the same P, no underflow
    n = d2.shape[0]
    target = math.log(perplexity)
    beta = torch.ones(n, dtype=torch.float64, device=d2.device)
    lo = torch.full_like(beta, -math.inf)
    hi = torch.full_like(beta, math.inf)
    for _ in range(PERPLEXITY_STEPS):
        p = torch.exp(-d2 * beta[:, None])
        s = p.sum(dim=1).clamp_min(1e-300)
        h = torch.log(s) + beta * (d2 * p).sum(dim=1) / s
        diff = h - target
        if bool((diff.abs() <= PERPLEXITY_TOL).all()):
            break
        too_flat = diff > 0  # entropy too high: sharpen (raise beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        up = torch.where(torch.isinf(hi), beta * 2, (beta + hi) / 2)
        down = torch.where(torch.isinf(lo), beta / 2, (beta + lo) / 2)
        beta = torch.where(diff.abs() <= PERPLEXITY_TOL, beta, torch.where(too_flat, up, down))
    p = torch.exp(-d2 * beta[:, None])
    return p / p.sum(dim=1, keepdim=True)


def joint_probabilities(idx: torch.Tensor, cond: torch.Tensor, n: int) -> Affinities:
    """(P + Pᵀ) / 2 normalised to sum 1, from conditional P over kNN edges; duplicates summed
    by sorting the edge keys (stable) and segment sums — deterministic on every device."""
    dev = cond.device
    k = idx.shape[1]
    r = torch.arange(n, device=dev).repeat_interleave(k)
    c = idx.reshape(-1)
    v = cond.reshape(-1)
    rows = torch.cat([r, c])
    cols = torch.cat([c, r])
    vals = torch.cat([v, v]) / 2
    key = rows * n + cols
    key_sorted, order = torch.sort(key, stable=True)
    vals = vals[order]
    uniq, counts = torch.unique_consecutive(key_sorted, return_counts=True)
    ends = torch.cumsum(counts, 0)
    cs = torch.cumsum(vals, 0)
    summed = cs[ends - 1] - torch.cat([cs.new_zeros(1), cs[ends[:-1] - 1]])
    summed = summed / summed.sum()
    rows_u = torch.div(uniq, n, rounding_mode="floor")
    cols_u = uniq - rows_u * n
    starts = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    starts[1:] = torch.cumsum(torch.bincount(rows_u, minlength=n), 0)
    return Affinities(rows_u, cols_u, summed, starts, n)


def _segment_sum(values: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Per-row sums of row-sorted ``values`` (E, c) given CSR ``starts``: float64 cumulative
    sums differenced at the boundaries (deterministic, no atomics)."""
    cs = torch.cumsum(values.to(torch.float64), dim=0)
    cs = torch.cat([cs.new_zeros(1, cs.shape[1]), cs])
    return cs[starts[1:]] - cs[starts[:-1]]


# ---------------------------------------------------------------------------- gradient


def attractive_forces(y: torch.Tensor, P: Affinities) -> torch.Tensor:
    """Σ_j p_ij w_ij (y_i - y_j), w = 1 / (1 + |y_i - y_j|²), over the sparse edges."""
    diff = y[P.rows] - y[P.cols]
    w = 1.0 / (1.0 + (diff * diff).sum(dim=1))
    return _segment_sum(diff * (P.vals * w)[:, None], P.starts).to(y.dtype)


def repulsive_exact(y: torch.Tensor, tile_pairs: int = TILE_PAIRS) -> tuple[torch.Tensor, float]:
    """Exact Σ_j w_ij² (y_i - y_j) per point and Z = Σ_{i≠j} w_ij, in row tiles."""
    n = y.shape[0]
    rows_per = max(1, tile_pairs // max(n, 1))
    force = torch.empty_like(y)
    z = torch.zeros((), dtype=torch.float64, device=y.device)
    for s in range(0, n, rows_per):
        # coordinate differences, not |a|² + |b|² - 2ab: no cancellation far from the origin
        dx = y[s : s + rows_per, 0:1] - y[None, :, 0]
        dy = y[s : s + rows_per, 1:2] - y[None, :, 1]
        w = 1.0 / (1.0 + dx * dx + dy * dy)
        z = z + w.sum(dtype=torch.float64) - dx.shape[0]  # minus the self terms (w_ii = 1)
        w2 = w * w
        force[s : s + rows_per, 0] = (w2 * dx).sum(dim=1)
        force[s : s + rows_per, 1] = (w2 * dy).sum(dim=1)
    return force, float(z)


_FFT_SIZES = None


def _fft_friendly(m: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= m (fast FFT sizes)."""
    global _FFT_SIZES
    if _FFT_SIZES is None:
        sizes = {
            2**a * 3**b * 5**c * 7**d
            for a in range(20) for b in range(13) for c in range(9) for d in range(8)
            if 2**a * 3**b * 5**c * 7**d <= 1 << 20
        }
        _FFT_SIZES = np.array(sorted(sizes))
    return int(_FFT_SIZES[np.searchsorted(_FFT_SIZES, m)])


def _lagrange_weights(u: torch.Tensor, p: int) -> torch.Tensor:
    """Lagrange basis on the p equispaced nodes (a + 0.5)/p of a unit box, at u (N,) -> (N, p)."""
    nodes = (torch.arange(p, dtype=u.dtype, device=u.device) + 0.5) / p
    out = torch.ones(u.shape[0], p, dtype=u.dtype, device=u.device)
    for a in range(p):
        for b in range(p):
            if a != b:
                out[:, a] *= (u - nodes[b]) / (nodes[a] - nodes[b])
    return out


def repulsive_fft(
    y: torch.Tensor, *, n_interpolation_points: int = 4, min_num_intervals: int = 50,
    ints_in_interval: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Σ_j w_ij² (y_i - y_j) and Z by FIt-SNE's interpolation (2-D only).

    The square box around the map is cut into ``nb`` × ``nb`` boxes (``nb`` = max(
    ``min_num_intervals``, extent / ``ints_in_interval``), rounded up so the grid is an
    FFT-friendly size), each with p × p equispaced nodes; all nodes together form one uniform
    m × m grid (m = nb · p), so spreading the charges needs no scatter: points are sorted by box
    and each box's sums go straight to its own nodes.
    """
    p = int(n_interpolation_points)
    n = y.shape[0]
    dt = torch.float64  # the Z identity below cancels terms of size |y|²: float32 is too coarse
    lo = float(y.min())
    hi = float(y.max())
    extent = max(hi - lo, 1e-6)
    nb = max(int(min_num_intervals), int(math.ceil(extent / ints_in_interval)))
    while _fft_friendly(2 * nb * p) != 2 * nb * p:  # a fast FFT size for the padded grid
        nb += 1
    box = extent / nb
    lo = lo - 1e-9 * box
    box = (extent + 2e-9 * box) / nb
    m = nb * p
    rel = (y - lo) / box
    b = rel.floor().clamp_(0, nb - 1)
    u = rel - b  # position inside the box, [0, 1)
    bx = b[:, 0].long()
    by = b[:, 1].long()
    wx = _lagrange_weights(u[:, 0].to(dt), p)  # (N, p)
    wy = _lagrange_weights(u[:, 1].to(dt), p)
    sq = (y * y).sum(dim=1)
    charges = torch.stack([torch.ones_like(sq), y[:, 0], y[:, 1], sq], dim=1).to(dt)  # (N, 4)
    # spread: per point (p, p, 4) contributions, summed per box in box order
    box_id = bx * nb + by
    order = torch.argsort(box_id, stable=True)
    contrib = (wx[:, :, None, None] * wy[:, None, :, None] * charges[:, None, None, :])[order]
    starts = torch.zeros(nb * nb + 1, dtype=torch.int64, device=y.device)
    starts[1:] = torch.cumsum(torch.bincount(box_id, minlength=nb * nb), 0)
    per_box = _segment_sum(contrib.reshape(n, p * p * 4), starts).to(dt)
    grid = per_box.reshape(nb, nb, p, p, 4).permute(4, 0, 2, 1, 3).reshape(4, m, m)
    # kernel 1/(1+d²)² on grid offsets, circulant embedding of size 2m, FFT convolution
    h = box / p
    off = torch.arange(-m + 1, m, dtype=dt, device=y.device) * h
    off = torch.cat([off[m - 1 :], off.new_zeros(1), off[: m - 1]])  # 0..m-1, pad, -(m-1)..-1
    d2 = off[:, None] ** 2 + off[None, :] ** 2
    kern = 1.0 / (1.0 + d2) ** 2
    kern[m, :] = 0
    kern[:, m] = 0
    size = (2 * m, 2 * m)
    pot = torch.fft.irfft2(torch.fft.rfft2(kern, s=size) * torch.fft.rfft2(grid, s=size), s=size)
    pot = pot[:, :m, :m]  # (4, m, m) potentials at the nodes
    # interpolate back: node (bx*p + a, by*p + c) weighted by wx[a] wy[c]
    pot = pot.reshape(4, nb, p, nb, p).permute(1, 3, 2, 4, 0)  # (nb, nb, p, p, 4)
    phi = (pot[bx, by] * (wx[:, :, None, None] * wy[:, None, :, None])).sum(dim=(1, 2))
    phi = phi.to(y.dtype)  # (N, 4): Σ w², Σ w² y_x, Σ w² y_y, Σ w² |y|² (self included)
    force = y * phi[:, :1] - phi[:, 1:3]
    z = ((1 + sq) * phi[:, 0] - 2 * (y * phi[:, 1:3]).sum(dim=1) + phi[:, 3]).sum(
        dtype=torch.float64) - n
    return force, float(z)


def gradient(y: torch.Tensor, P: Affinities, exaggeration: float, exact: bool,
             fft: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """openTSNE's gradient (no factor 4): exaggeration · attraction - repulsion / Z."""
    rep, z = repulsive_exact(y) if exact else repulsive_fft(y, **fft)
    return exaggeration * attractive_forces(y, P) - rep / z, z


def kl_divergence(y: torch.Tensor, P: Affinities, z: float | None = None) -> float:
    """KL(P || Q) of a layout; Z exact (in tiles) unless given."""
    if z is None:
        _, z = repulsive_exact(y)
    diff = y[P.rows] - y[P.cols]
    w = 1.0 / (1.0 + (diff * diff).sum(dim=1)).to(torch.float64)
    pv = P.vals.to(torch.float64)
    return float((pv * (torch.log(pv) - torch.log(w / z))).sum())


# ---------------------------------------------------------------------------- driver


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("t-SNE backend 'torch': device 'cuda' requested but CUDA is not available")
    return dev


def initial_layout(x: torch.Tensor, init: str | np.ndarray, seed: int) -> torch.Tensor:
    """openTSNE's ``pca`` (rescaled to std 1e-4 + 1 % jitter) or ``random`` (N(0, 1e-4))
    initialisation; the random numbers come from numpy so every device starts alike."""
    n = x.shape[0]
    rs = np.random.RandomState(seed)
    if isinstance(init, np.ndarray):
        if init.shape != (n, 2):
            raise ValueError(f"init array has shape {init.shape}, expected ({n}, 2)")
        return torch.as_tensor(init, dtype=torch.float32, device=x.device)
    if init == "random":
        return torch.as_tensor(rs.normal(0, 1e-4, (n, 2)), dtype=torch.float32, device=x.device)
    if init != "pca":
        raise ValueError(f"t-SNE backend 'torch': init must be 'pca', 'random' or an array, got {init!r}")
    y, _ = pca_torch(x, 2)
    y = y.to(torch.float64)
    std = float(y[:, 0].std(unbiased=False))
    if not std > 0:  # all rows identical: no principal direction, start from N(0, 1e-4)
        return torch.as_tensor(rs.normal(0, 1e-4, (n, 2)), dtype=torch.float32, device=x.device)
    y = y / std * 1e-4
    jitter_std = float(y[:, 0].std(unbiased=False)) * 0.01
    y = y + torch.as_tensor(rs.normal(0, jitter_std, (n, 2)), device=x.device)
    return y.to(torch.float32)


def affinities_from_features(x: torch.Tensor, perplexity: float) -> Affinities:
    n = x.shape[0]
    k = min(n - 1, int(3 * perplexity))
    idx, dist = knn(x, k, device=x.device)
    dev = x.device
    cond = perplexity_calibration(torch.as_tensor(dist, device=dev), perplexity)
    return joint_probabilities(torch.as_tensor(idx, device=dev), cond, n)


def optimise(y: torch.Tensor, P: Affinities, *, n_iter: int, exaggeration: float,
             learning_rate: float | str, momentum: float, exact: bool, fft: dict[str, Any],
             state: dict[str, torch.Tensor]) -> float:
    """openTSNE's ``gradient_descent`` (gains, momentum, step clipping, re-centring), in place;
    ``state`` carries gains and the last update between phases. Returns the last Z."""
    n = y.shape[0]
    lr = n / exaggeration if learning_rate == "auto" else float(learning_rate)
    update = state.setdefault("update", torch.zeros_like(y))
    gains = state.setdefault("gains", torch.ones_like(y))
    z = float("nan")
    for _ in range(n_iter):
        grad, z = gradient(y, P, exaggeration, exact, fft)
        flipped = torch.sign(update) != torch.sign(grad)
        gains.copy_(torch.where(flipped, gains + 0.2, gains * 0.8 + MIN_GAIN))
        update.mul_(momentum).sub_(lr * gains * grad)
        norms = update.norm(dim=1, keepdim=True)
        update.copy_(torch.where(norms > MAX_STEP_NORM, update / norms * MAX_STEP_NORM, update))
        y.add_(update)
        y.sub_(y.mean(dim=0, keepdim=True))
    return z


def tsne_torch(features: np.ndarray | torch.Tensor, params: TorchTSNEParams | None = None
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``features`` (N, D), already in the metric space, in 2-D. Returns the float32
    coordinates and a dict of what was used (device, repulsion method, timings, KL)."""
    p = params or TorchTSNEParams()
    dev = resolve_device(p.device)
    timings: dict[str, float] = {}

    def tick(name: str, start: float) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        timings[name] = round(now - start, 4)
        return now

    t0 = time.perf_counter()
    n, d = features.shape
    if n < 4:
        raise ValueError(f"t-SNE backend 'torch' needs at least 4 samples, got {n}")
    if p.pca_dims and p.pca_dims < min(n, d):
        x, _ = pca_torch(features, int(p.pca_dims), dev)  # streamed to the device in chunks
    else:
        x = _rows_on(features, 0, n, dev)
    t = tick("pca", t0)
    P = affinities_from_features(x, p.perplexity)
    t = tick("affinities", t)
    y = initial_layout(x, p.init, p.seed)
    del x
    exact_max = p.exact_max_n if p.exact_max_n is not None else EXACT_MAX_N.get(dev.type, 25_000)
    exact = n <= exact_max
    fft = {"n_interpolation_points": p.n_interpolation_points,
           "min_num_intervals": p.min_num_intervals, "ints_in_interval": p.ints_in_interval}
    state: dict[str, torch.Tensor] = {}
    optimise(y, P, n_iter=p.early_exaggeration_iter, exaggeration=p.early_exaggeration,
             learning_rate=p.learning_rate, momentum=p.momentum, exact=exact, fft=fft, state=state)
    z = optimise(y, P, n_iter=p.n_iter, exaggeration=1.0, learning_rate=p.learning_rate,
                 momentum=p.final_momentum, exact=exact, fft=fft, state=state)
    t = tick("optimise", t)
    if not torch.isfinite(y).all():
        raise RuntimeError("t-SNE backend 'torch' diverged (non-finite coordinates)")
    kl = kl_divergence(y, P, z if not exact else None) if p.extra.get("kl", True) else None
    tick("kl", t)
    used = {
        "device": str(dev),
        "repulsion": "exact" if exact else "fft",
        "exact_max_n": int(exact_max),
        "k_neighbors": int(min(n - 1, int(3 * p.perplexity))),
        "kl_divergence": kl,
        "timings": timings,
    }
    return y.cpu().numpy().astype(np.float32), used
