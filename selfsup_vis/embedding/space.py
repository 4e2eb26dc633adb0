"""The feature space an embedding and its quality numbers live in: Euclidean or cosine.

Self-supervised features are compared by cosine almost everywhere (kNN monitors, retrieval), and
their norm often carries nuisance information (image contrast, token count). If t-SNE ran on raw
features while kNN used cosine, the map and its numbers would describe two different spaces. So
one transform, :func:`to_metric_space`, is applied once and the embedding, the kNN numbers and
trustworthiness all work on its output with Euclidean distances: on L2-normalised rows,
‖a − b‖² = 2 − 2·cos(a, b), so Euclidean neighbours there are exactly cosine neighbours.
"""

from __future__ import annotations

import numpy as np

from selfsup_vis.config.schemas import Metric  # the StrEnum of task.metric (defined once there)

__all__ = ["check_metric", "describe_space", "to_metric_space"]

_CHUNK = 65_536


def check_metric(metric: str) -> Metric:
    """The metric as a :class:`Metric`; an unknown name is an error listing the valid ones."""
    try:
        return Metric(str(metric).lower())
    except ValueError:
        raise ValueError(
            f"unknown metric {metric!r}; choose one of {[m.value for m in Metric]}"
        ) from None


def describe_space(metric: str, standardize: bool = False) -> str:
    """Human-readable name of the space, for summary.json and figure footers."""
    m = check_metric(metric)
    steps = (["standardised"] if standardize else []) + (["L2-normalised"] if m is Metric.cosine else [])
    return f"{m.value} ({', '.join(steps)})" if steps else f"{m.value} (raw features)"


def to_metric_space(features: np.ndarray, metric: str = "cosine", standardize: bool = False) -> np.ndarray:
    """``features`` (N, D) mapped so that Euclidean distance there is the requested distance.

    ``standardize``: every dimension to zero mean and unit variance first (constant dimensions
    become 0), so that a few high-variance channels do not dominate. ``cosine``: then every row
    to unit length (all-zero rows stay zero). Euclidean without standardising returns the input
    unchanged (no copy); otherwise a new float32 array, filled in chunks.
    """
    m = check_metric(metric)
    x = np.asarray(features)
    if m is Metric.euclidean and not standardize:
        return x
    n, d = x.shape
    out = np.empty((n, d), dtype=np.float32)
    if standardize:
        mean = np.zeros(d, dtype=np.float64)
        sq = np.zeros(d, dtype=np.float64)
        for s in range(0, n, _CHUNK):
            block = np.asarray(x[s : s + _CHUNK], dtype=np.float64)
            mean += block.sum(axis=0)
            sq += (block * block).sum(axis=0)
        mean /= max(n, 1)
        std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0))
        scale = np.where(std > 1e-12, 1.0 / np.maximum(std, 1e-12), 0.0)
    for s in range(0, n, _CHUNK):
        block = np.asarray(x[s : s + _CHUNK], dtype=np.float32)
        if standardize:
            block = ((block - mean) * scale).astype(np.float32)
        if m is Metric.cosine:
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            block = block / np.maximum(norms, 1e-12)
        out[s : s + _CHUNK] = block
    return out
