"""Exact k-nearest neighbours in torch: chunked matrix-product top-k, on the GPU or the CPU.

Why not sklearn: its brute-force search is single-device and holds (chunk × N) float64 blocks;
the t-SNE affinities and the quality numbers need exact neighbours of 10^5–10^6 rows, which a
GPU finds in seconds. The result is the same as ``sklearn.neighbors.NearestNeighbors`` with
``algorithm="brute"`` (ties aside):

1. Candidates: for a chunk of query rows, squared distances ``|q|² + |x|² - 2 q·x`` in float32
   against a chunk of reference rows at a time, a running top-(k + margin) merged per
   reference chunk. Memory is bounded by ``chunk`` (query rows) × ``ref_chunk`` (reference rows).
2. Re-ranking: the candidates' distances are recomputed directly (``|q - x|``, float64), so
   the float32 cancellation of step 1 cannot swap two neighbours whose true distances differ;
   only candidates within the margin can move, and the margin (16) is far wider than the
   float32 error in practice.

``metric="cosine"`` ranks by the Euclidean distance of L2-normalised rows (the same order as
cosine distance) and returns cosine distances ``1 - cos`` as sklearn does.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("euclidean", "cosine")
MARGIN = 16  # extra float32 candidates re-ranked exactly in float64
REFINE_BYTES = 256 * 2**20  # bound of the (rows × candidates × D) float64 re-ranking block


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.to(device=device, dtype=torch.float32)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def knn(
    points: np.ndarray | torch.Tensor,
    k: int,
    *,
    queries: np.ndarray | torch.Tensor | None = None,
    exclude_self: bool = True,
    metric: str = "euclidean",
    chunk: int = 2048,
    ref_chunk: int = 65_536,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours of ``points[queries]`` among ``points``.

    ``queries`` are row indices (default: every row). With ``exclude_self`` a query never
    returns itself (leave-one-out: an exact duplicate of it still counts as a neighbour).
    Returns ``(indices int64 (Q, k), distances float64 (Q, k))``, nearest first, as numpy.
    Memory on ``device`` is the points plus O(chunk × ref_chunk) per step.
    """
    if metric not in METRICS:
        raise ValueError(f"knn: metric must be one of {METRICS}, got {metric!r}")
    dev = torch.device(device) if device is not None else default_device()
    x = _as_tensor(points, dev)
    if x.ndim != 2:
        raise ValueError(f"knn: points must be 2-D (N, D), got shape {tuple(x.shape)}")
    n = x.shape[0]
    q_idx = (torch.arange(n, device=dev) if queries is None
             else torch.as_tensor(np.asarray(queries), device=dev, dtype=torch.int64))
    if queries is None:
        q_idx = q_idx.to(torch.int64)
    available = n - 1 if exclude_self else n
    if not 1 <= k <= available:
        raise ValueError(f"knn: k must be in 1..{available} for {n} points, got {k}")
    if chunk < 1 or ref_chunk < 1:
        raise ValueError(f"knn: chunk and ref_chunk must be >= 1, got {chunk}, {ref_chunk}")
    if metric == "cosine":
        x = _normalise(x)
    sq = (x * x).sum(dim=1)
    kc = min(k + MARGIN, available)
    d = x.shape[1]
    x64 = None
    out_i = torch.empty((len(q_idx), k), dtype=torch.int64)
    out_d = torch.empty((len(q_idx), k), dtype=torch.float64)
    for s in range(0, len(q_idx), chunk):
        qi = q_idx[s : s + chunk]
        q = x[qi]
        best_d = torch.full((len(qi), 0), float("inf"), device=dev)
        best_i = torch.empty((len(qi), 0), dtype=torch.int64, device=dev)
        for r in range(0, n, ref_chunk):
            ref = x[r : r + ref_chunk]
            d2 = (sq[qi, None] + sq[None, r : r + ref_chunk]).addmm_(q, ref.T, alpha=-2.0)
            if exclude_self:
                local = qi - r
                hit = (local >= 0) & (local < ref.shape[0])
                rows = torch.nonzero(hit).squeeze(1)
                d2[rows, local[rows]] = float("inf")
            take = min(kc, d2.shape[1])
            vd, vi = torch.topk(d2, take, dim=1, largest=False, sorted=False)
            best_d = torch.cat([best_d, vd], dim=1)
            best_i = torch.cat([best_i, vi + r], dim=1)
            if best_d.shape[1] > kc:
                best_d, pos = torch.topk(best_d, kc, dim=1, largest=False, sorted=False)
                best_i = torch.gather(best_i, 1, pos)
        # re-rank the candidates with exact float64 distances, rows in blocks of bounded size
        if x64 is None:
            x64 = x.to(torch.float64)
        rows_per = max(1, REFINE_BYTES // (8 * kc * d))
        for b in range(0, len(qi), rows_per):
            cand = best_i[b : b + rows_per]
            diff = x64[cand] - x64[qi[b : b + rows_per], None, :]
            exact = (diff * diff).sum(dim=2)
            exact = torch.where(torch.isinf(best_d[b : b + rows_per]), torch.inf, exact)
            order = torch.argsort(exact, dim=1, stable=True)[:, :k]
            out_i[s + b : s + b + len(cand)] = torch.gather(cand, 1, order).cpu()
            out_d[s + b : s + b + len(cand)] = torch.gather(exact, 1, order).cpu()
    dist = out_d.clamp_min(0).sqrt()
    if metric == "cosine":
        dist = dist * dist / 2.0  # |a - b|² = 2 - 2 cos for unit rows
    return out_i.numpy(), dist.numpy()
