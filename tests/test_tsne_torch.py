"""t-SNE in torch (embedding.tsne_torch) against the project's openTSNE default, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup_vis.embedding import tsne_torch as T
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding, resolve_backend
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.space import to_metric_space
from selfsup_vis.embedding.synthetic import make_clustered_features

N = 2000


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    return make_clustered_features(N, dim=256, n_classes=20, seed=0)


SEEDS = (0, 1)


@pytest.fixture(scope="module")
def runs(mixture):
    """openTSNE default runs and torch runs with the FFT repulsion (the path of large N; at this
    N the CPU would pick the exact tiles) for two seeds each: a single run's 2-D kNN@10 moves
    by ~0.005 from seed to seed (and openTSNE's from run to run), so quality is compared on the
    mean of two."""
    torch.set_num_threads(1)
    x, _ = mixture
    ref = [compute_embedding(x, EmbedParams(backend="opentsne", n_jobs=1, seed=s)) for s in SEEDS]
    ours = [compute_embedding(x, EmbedParams(backend="torch", seed=s, extra={"device": "cpu", "exact_max_n": 0}))
            for s in SEEDS]
    return ref, ours


@pytest.fixture(scope="module")
def common_p(mixture) -> T.Affinities:
    """P of the reduced features (exact kNN): both layouts' KL divergence is measured on it."""
    xs = torch.as_tensor(to_metric_space(mixture[0], "cosine"))
    return T.affinities_from_features(T.pca_torch(xs, 100)[0], 30.0)


@pytest.mark.slow
def test_torch_tsne_matches_opentsne_default(mixture, runs, common_p):
    x, labels = mixture
    refs, ours_all = runs
    ours = ours_all[0]
    assert ours.params["backend"] == "torch" and ours.params["torch"]["repulsion"] == "fft"
    assert ours.params["n_iter"] == refs[0].params["n_iter"] == 150
    assert ours.params["early_exaggeration_iter"] == 100 and ours.params["pca_dims"] == 100
    kl_ref = np.mean([T.kl_divergence(torch.as_tensor(r.coords), common_p) for r in refs])
    kl_ours = np.mean([T.kl_divergence(torch.as_tensor(r.coords), common_p) for r in ours_all])
    q_ref = [embedding_quality(x, r.coords, labels) for r in refs]
    q_ours = [embedding_quality(x, r.coords, labels) for r in ours_all]
    trust_ref, trust_ours = (np.mean([q["trustworthiness"] for q in qs]) for qs in (q_ref, q_ours))
    knn_ref, knn_ours = (np.mean([q["knn_2d@10"] for q in qs]) for qs in (q_ref, q_ours))
    print(f"openTSNE {np.mean([r.seconds for r in refs]):.1f} s KL {kl_ref:.4f} trust {trust_ref:.4f} "
          f"kNN@10 {knn_ref:.4f} | torch {np.mean([r.seconds for r in ours_all]):.1f} s KL {kl_ours:.4f} "
          f"trust {trust_ours:.4f} kNN@10 {knn_ours:.4f}")
    assert kl_ours <= 1.05 * kl_ref, (kl_ours, kl_ref)
    assert trust_ours >= trust_ref - 0.01, (trust_ours, trust_ref)
    assert knn_ours >= knn_ref - 0.01, (knn_ours, knn_ref)


@pytest.mark.slow
def test_exact_and_fft_repulsion_agree(runs, common_p):
    """At a real t-SNE layout the FFT repulsion (the only approximated part of the gradient) is
    within 1 % of the exact one, and so is the whole gradient at a layout away from the optimum
    (the layout rescaled by 1/2, which t-SNE pulls apart again); at the optimum itself
    attraction and repulsion cancel, so the whole gradient's relative error is meaningless."""
    y = torch.as_tensor(runs[1][0].coords, dtype=torch.float32)
    rep_exact, z_exact = T.repulsive_exact(y)
    rep_fft, z_fft = T.repulsive_fft(y)
    assert abs(z_fft - z_exact) / z_exact < 5e-3
    rep_err = float((rep_fft / z_fft - rep_exact / z_exact).norm() / (rep_exact / z_exact).norm())
    half = y / 2
    g_exact, _ = T.gradient(half, common_p, 1.0, True, {})
    g_fft, _ = T.gradient(half, common_p, 1.0, False, {})
    g_err = float((g_fft - g_exact).norm() / g_exact.norm())
    print(f"Z rel err {abs(z_fft - z_exact) / z_exact:.1e}, repulsion {rep_err:.1e}, gradient {g_err:.1e}")
    assert rep_err <= 1e-2 and g_err <= 1e-2


def test_perplexity_calibration_hits_the_target():
    rng = np.random.default_rng(0)
    dist = torch.as_tensor(np.sort(rng.gamma(2.0, 1.0, size=(300, 45)), axis=1))
    p = T.perplexity_calibration(dist, 15.0)
    entropy = -(p * torch.log(p)).sum(dim=1)
    torch.testing.assert_close(torch.exp(entropy), torch.full((300,), 15.0, dtype=p.dtype), rtol=1e-5, atol=0)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(300, dtype=p.dtype))


def test_joint_probabilities_are_symmetric_and_normalised():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(200, 5)), dtype=torch.float32)
    P = T.affinities_from_features(x, 10.0)
    dense = torch.zeros(200, 200, dtype=P.vals.dtype)
    dense[P.rows, P.cols] = P.vals
    torch.testing.assert_close(dense, dense.T)
    assert abs(float(P.vals.sum()) - 1.0) < 1e-12 and float(dense.diagonal().abs().max()) == 0.0


def test_seeded_runs_are_identical_and_seed_matters():
    x, _ = make_clustered_features(300, dim=32, n_classes=5, seed=3)
    params = {"n_iter": 30, "early_exaggeration_iter": 20, "seed": 7, "device": "cpu"}
    fft = {"exact_max_n": 0, "min_num_intervals": 10}  # a small grid: this test is about seeds
    a = T.tsne_torch(x, T.TorchTSNEParams(**params, **fft))[0]
    b = T.tsne_torch(x, T.TorchTSNEParams(**params, **fft))[0]
    c = T.tsne_torch(x, T.TorchTSNEParams(**{**params, "seed": 8}, **fft))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    e1 = T.tsne_torch(x, T.TorchTSNEParams(**params))[0]
    e2 = T.tsne_torch(x, T.TorchTSNEParams(**params))[0]
    np.testing.assert_array_equal(e1, e2)


def test_backend_options_are_checked():
    x, _ = make_clustered_features(50, dim=16, n_classes=2)
    with pytest.raises(ValueError, match="unknown option"):
        compute_embedding(x, EmbedParams(backend="torch", extra={"theta": 0.5}))
    with pytest.raises(ValueError, match="init must be"):
        compute_embedding(x, EmbedParams(backend="torch", init="spectral", extra={"device": "cpu"}))
    assert resolve_backend("auto") == ("torch" if torch.cuda.is_available() else resolve_backend("opentsne"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_tsne_on_cuda_is_deterministic_and_matches_cpu_quality(mixture, runs):
    x, labels = mixture
    a = compute_embedding(x, EmbedParams(backend="torch", extra={"device": "cuda"}))
    b = compute_embedding(x, EmbedParams(backend="torch", extra={"device": "cuda"}))
    np.testing.assert_array_equal(a.coords, b.coords)
    q_gpu = embedding_quality(x, a.coords, labels)
    q_cpu = embedding_quality(x, runs[1][0].coords, labels)
    assert abs(q_gpu["trustworthiness"] - q_cpu["trustworthiness"]) < 0.01
    assert abs(q_gpu["knn_2d@10"] - q_cpu["knn_2d@10"]) < 0.01


def test_tiny_and_degenerate_inputs():
    """A handful of points (perplexity lowered), exact duplicates and identical rows give a
    finite map, as the other backends do."""
    rng = np.random.default_rng(0)
    same = np.ones((30, 8))
    dups = np.repeat(rng.normal(size=(5, 8)), 6, axis=0)
    for x in (rng.normal(size=(5, 30)), dups, same):
        with pytest.warns(UserWarning, match="perplexity"):
            res = compute_embedding(x, EmbedParams(backend="torch", extra={"device": "cpu"}))
        assert res.coords.shape == (len(x), 2) and np.isfinite(res.coords).all()
