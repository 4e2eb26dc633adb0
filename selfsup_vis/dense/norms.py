"""Token norms and high-norm outlier tokens ("Vision Transformers Need Registers", Darcet et
al. 2024): per-patch L2 norms, outliers above median + k·MAD over all patches of a layer, and
the norms of register and CLS tokens kept apart (they are not patches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NormStats:
    """One layer's patch-norm statistics over all images."""

    median: float
    mad: float
    k: float
    threshold: float  # median + k * MAD
    outlier_fraction: float
    num_patches: int
    max_norm: float
    cls_mean: float | None = None
    register_mean: float | None = None
    register_max: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def norm_maps(features: torch.Tensor) -> torch.Tensor:
    """(n, h, w, C) -> (n, h, w) L2 norm of each patch feature."""
    return features.double().norm(dim=-1).float()


def outliers(norms: torch.Tensor, k: float) -> tuple[torch.Tensor, float, float, float]:
    """(mask of norms > median + k·MAD, median, MAD, threshold) over all given norms. MAD is the
    raw median absolute deviation (no 1.4826 factor: k is in MAD units as stated)."""
    v = norms.double().flatten()
    med = float(v.median())
    mad = float((v - med).abs().median())
    thr = med + float(k) * mad
    return norms > thr, med, mad, thr


def norm_stats(norms: torch.Tensor, k: float, cls: torch.Tensor | None = None,
               registers: torch.Tensor | None = None) -> tuple[torch.Tensor, NormStats]:
    """Outlier mask of (n, h, w) patch ``norms`` and the layer's statistics; ``cls`` (n, C) and
    ``registers`` (n, R, C) token features are summarised separately."""
    mask, med, mad, thr = outliers(norms, k)
    stats = NormStats(med, mad, float(k), thr, float(mask.double().mean()), int(mask.numel()), float(norms.max()))
    if cls is not None:
        stats.cls_mean = float(cls.double().norm(dim=-1).mean())
    if registers is not None and registers.shape[1]:
        rn = registers.double().norm(dim=-1)
        stats.register_mean, stats.register_max = float(rn.mean()), float(rn.max())
    return mask, stats
