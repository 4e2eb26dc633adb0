"""Exact torch kNN (embedding.knn) against sklearn's brute-force neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from selfsup_vis.embedding.knn import knn


def _true_distances(x: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.linalg.norm(x[idx] - x[:, None, :], axis=2)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_equals_sklearn_exact_neighbours(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 40)).astype(np.float32) + rng.normal(size=(1, 40)).astype(np.float32)
    k = 12
    # query and reference chunks far smaller than N: the merge across chunks is exercised
    idx, dist = knn(x, k, metric=metric, chunk=256, ref_chunk=300, device="cpu")
    sk_d, sk_i = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric=metric).fit(x).kneighbors(x)
    assert idx.shape == (1500, k) and dist.shape == (1500, k)
    assert not (idx == np.arange(1500)[:, None]).any()  # never itself
    np.testing.assert_allclose(dist, sk_d[:, 1:], atol=1e-5)
    same = idx == sk_i[:, 1:]
    # disagreements only between neighbours at (numerically) the same distance
    true = _true_distances(x, idx, metric)
    true_sk = _true_distances(x, sk_i[:, 1:], metric)
    assert np.abs(true[~same] - true_sk[~same]).max(initial=0.0) < 1e-6
    assert same.mean() > 0.999


def test_knn_queries_subset_and_keep_self():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8))
    q = np.array([3, 50, 399])
    idx, dist = knn(x, 5, queries=q, exclude_self=False, chunk=2, device="cpu")
    assert (idx[:, 0] == q).all() and np.allclose(dist[:, 0], 0.0, atol=1e-6)
    sk_i = NearestNeighbors(n_neighbors=5).fit(x).kneighbors(x[q], return_distance=False)
    np.testing.assert_array_equal(idx, sk_i)
    with pytest.raises(ValueError, match="k must be"):
        knn(x, 400, device="cpu")
    with pytest.raises(ValueError, match="metric"):
        knn(x, 3, metric="manhattan", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_knn_cuda_equals_cpu():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5000, 64)).astype(np.float32)
    i_cpu, d_cpu = knn(x, 10, device="cpu")
    i_gpu, d_gpu = knn(x, 10, device="cuda", chunk=1000, ref_chunk=1200)
    assert (i_cpu == i_gpu).mean() > 0.999
    np.testing.assert_allclose(d_cpu, d_gpu, atol=1e-5)
