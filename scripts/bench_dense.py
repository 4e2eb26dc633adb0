#!/usr/bin/env python
"""Benchmark: the PCA -> RGB stage of ``task=dense`` (streamed exact PCA, Otsu foreground, the
second PCA of the foreground, percentiles, applied to every patch) against the notebooks' way
(scikit-learn's ``PCA(3)`` on all patches in memory, then again on the foreground), side by
side on the same features in one process. Extraction excluded: ViT-B/16 patch tokens of 256
images at 224 px are 256 x 196 x 768.

    python scripts/bench_dense.py            # 256 x 196 x 768
    python scripts/bench_dense.py --quick    # 32 x 196 x 768
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup_vis.dense.pca import fit_basis, otsu_threshold, tensor_chunks  # noqa: E402


def features(images: int, patches: int = 196, dim: int = 768) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((images * patches, dim), dtype=np.float32)
    x[:, 0] += np.where(np.arange(x.shape[0]) % patches < 60, 8.0, 0.0)  # a foreground direction
    return x


def ours(x: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    basis = fit_basis(tensor_chunks(x, rows=16384), x.shape[1])
    out = basis.apply(torch.from_numpy(x))
    return time.perf_counter() - t0, out["foreground"].numpy()


def sklearn_way(x: np.ndarray) -> tuple[float, np.ndarray]:
    from sklearn.decomposition import PCA

    t0 = time.perf_counter()
    pc1 = PCA(3, svd_solver="full").fit_transform(x)[:, 0]
    thr = otsu_threshold(torch.from_numpy(pc1))
    fg = pc1 > thr if (pc1 > thr).mean() <= 0.5 else pc1 <= thr
    PCA(3, svd_solver="full").fit_transform(x[fg])
    return time.perf_counter() - t0, fg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    x = features(32 if args.quick else 256)
    print(f"{x.shape[0]} patches x {x.shape[1]} dims, {torch.get_num_threads()} threads, "
          f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    t_ours, fg_ours = ours(x)
    t_sk, fg_sk = sklearn_way(x)
    agree = float((fg_ours == fg_sk).mean())
    print(f"ours (streamed exact PCA, both stages + apply): {t_ours:.2f} s")
    print(f"scikit-learn PCA(3, full SVD), both stages:      {t_sk:.2f} s")
    print(f"ratio sklearn / ours: {t_sk / t_ours:.1f}x; foreground masks agree on {agree:.4f} of patches")


if __name__ == "__main__":
    main()
