"""Synthetic clustered features with structure, for benchmarks and tests of the embedding code.

Real backbone features are not isotropic blobs: classes group into super-classes, each class
spreads along a few directions of its own, and everything lives near a low-dimensional subspace
of a wide feature vector. The generator mimics that so that t-SNE backends are compared on data
where they can actually differ (overlapping classes, nested clusters), not on trivially
separable points.
"""

from __future__ import annotations

import numpy as np


def make_clustered_features(
    n_samples: int,
    *,
    dim: int = 2048,
    n_classes: int = 50,
    n_superclasses: int = 10,
    latent_dim: int = 64,
    class_rank: int = 6,
    class_sep: float = 0.15,
    noise: float = 2.5,
    seed: int = 0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features (N, dim), labels (N,))`` drawn from nested Gaussian clusters.

    Super-class centres, class offsets, a per-class low-rank spread and isotropic noise live in a
    ``latent_dim`` space that a fixed random matrix maps into ``dim`` features followed by a ReLU
    (features of a GAP'd ReLU backbone are non-negative). Classes are balanced up to one sample.
    """
    if n_samples < 1 or n_classes < 1 or dim < 1:
        raise ValueError(
            f"make_clustered_features: n_samples={n_samples}, n_classes={n_classes}, dim={dim} "
            "must all be >= 1"
        )
    rng = np.random.default_rng(seed)
    n_superclasses = max(1, min(n_superclasses, n_classes))
    super_centres = rng.normal(0.0, 1.0, size=(n_superclasses, latent_dim))
    class_super = np.arange(n_classes) % n_superclasses
    offsets = rng.normal(0.0, class_sep, size=(n_classes, latent_dim))
    class_centres = super_centres[class_super] + offsets
    # per-class directions of variation (rank class_rank) plus isotropic noise (in units of
    # class_sep): with the default noise about 7% of the 10 nearest neighbours in feature space
    # belong to another class, like a decent but imperfect backbone
    class_bases = rng.normal(
        0.0, 2 * class_sep / np.sqrt(class_rank), size=(n_classes, class_rank, latent_dim)
    )

    labels = rng.permutation(np.arange(n_samples) % n_classes)
    coeffs = rng.normal(size=(n_samples, class_rank))
    latent = (
        class_centres[labels]
        + np.einsum("nr,nrd->nd", coeffs, class_bases[labels])
        + rng.normal(0.0, noise * class_sep, size=(n_samples, latent_dim))
    )
    mixing = rng.normal(0.0, 1.0 / np.sqrt(latent_dim), size=(latent_dim, dim))
    features = np.empty((n_samples, dim), dtype=dtype)
    chunk = 8192
    for start in range(0, n_samples, chunk):
        block = latent[start : start + chunk] @ mixing
        np.maximum(block, 0.0, out=block)
        features[start : start + chunk] = block
    return features, labels.astype(np.int64)
