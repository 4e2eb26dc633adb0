"""PCA of patch features to RGB, the DINOv2 / DINOv3 way, with every choice stated.

Stage 1: a PCA (3 components) over the patches -- of one image, or jointly over a set so the
same part gets the same colour everywhere. Its first component, thresholded (Otsu by default,
the sign chosen so that the foreground is the smaller side unless overridden), separates
foreground from background. Stage 2: a PCA of the foreground patches only, whose 3 components,
each min-max scaled between robust percentiles, are R, G, B; the background is black.

The PCA is exact: the (D, D) covariance is accumulated in float64 over chunks of patches (so
1,000 images x 256 patches x 1024 dims stream through ~8 MB of state instead of 1 GB) and
diagonalised with ``torch.linalg.eigh``. Features are normalised first as asked: ``none`` (the
papers' choice), ``l2`` (each patch to unit norm) or ``standardise`` (each dimension to unit
variance, i.e. a PCA of the correlation matrix). The fitted :class:`DenseBasis` is saved as
``pca_basis.npz`` and can be applied to other images or checkpoints of the same feature size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from selfsup_vis.utils.io import write_with

log = logging.getLogger(__name__)

BASIS_FILE = "pca_basis.npz"
Chunks = Callable[[], Iterable[torch.Tensor]]  # a fresh iterator of (n, D) patch chunks per call


class Normalisation(StrEnum):
    none = "none"
    l2 = "l2"
    standardise = "standardise"


def normalise(x: torch.Tensor, how: str) -> torch.Tensor:
    """Per-patch normalisation of (n, D) features (``standardise`` is applied by the basis)."""
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1) if how == Normalisation.l2 else x


class Covariance:
    """Streaming mean and covariance of (n, D) chunks: each chunk's product in float32 (the
    costly part), shifted by the first chunk's mean against cancellation, summed in float64."""

    def __init__(self, dim: int) -> None:
        self.dim, self.n = int(dim), 0
        self.ref: torch.Tensor | None = None
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"PCA: chunk of dimension {x.shape[-1]}, expected {self.dim}")
        if x.shape[0] == 0:
            return
        x = x.float()
        if self.ref is None:
            self.ref = x.mean(0)
            self.s1 = torch.zeros(self.dim, dtype=torch.float64, device=x.device)
            self.s2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
        xs = x - self.ref
        self.n += x.shape[0]
        self.s1 += xs.sum(0, dtype=torch.float64)
        self.s2 += (xs.T @ xs).double()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2 or self.s1 is None or self.s2 is None or self.ref is None:
            raise ValueError(f"PCA needs at least 2 patches, got {self.n}")
        shifted = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(shifted, shifted)) / (self.n - 1)
        return shifted + self.ref.double(), cov


@dataclass
class Projection:
    """x -> ((x - mean) / scale) @ components.T, then per channel (p - lo) / (hi - lo) in [0, 1]."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (k, D) orthonormal rows, sign fixed (largest loading positive)
    scale: torch.Tensor  # (D,) ones unless standardised
    explained: torch.Tensor  # (k,) fraction of the total variance
    lo: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    hi: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, k), in float32 (the basis is kept in float64)."""
        d = x.device
        c = (self.components / self.scale).float().to(d)
        return (x.float() - self.mean.float().to(d)) @ c.T

    def scaled(self, p: torch.Tensor) -> torch.Tensor:
        lo, hi = self.lo.to(p.device), self.hi.to(p.device)
        return ((p - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def top_eigenvectors(cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs of a symmetric matrix, exactly (LAPACK ``syevr`` on that
    index range through SciPy: a fraction of a full ``eigh``), largest first; and the trace."""
    d = cov.shape[0]
    vals, vecs = scipy.linalg.eigh(cov.cpu().numpy(), subset_by_index=[max(0, d - k), d - 1], driver="evr")
    vals, vecs = torch.from_numpy(vals[::-1].copy()), torch.from_numpy(vecs[:, ::-1].copy())
    return vals.to(cov.device), vecs.to(cov.device)


def fit_projection(chunks: Chunks, dim: int, k: int, how: str,
                   keep: list[torch.Tensor] | None = None) -> Projection:
    """Exact PCA of the streamed patches (with ``keep``: only the rows each chunk's mask keeps):
    top-``k`` eigenvectors of the covariance (the correlation matrix for ``standardise``)."""
    acc = Covariance(dim)
    for i, x in enumerate(chunks()):
        x = normalise(x, how)
        acc.update(x[keep[i]] if keep is not None else x)
    mean, cov = acc.result()
    scale = torch.ones_like(mean)
    if how == Normalisation.standardise:
        scale = cov.diagonal().clamp_min(1e-12).sqrt()
        cov = cov / torch.outer(scale, scale)
    top, vecs = top_eigenvectors(cov, k)
    comps = vecs.T.contiguous()
    # sign convention (sklearn's svd_flip): the largest loading of each component is positive
    flip = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
    comps = comps * torch.where(flip == 0, torch.ones_like(flip), flip)[:, None]
    explained = top.clamp_min(0) / cov.diagonal().sum().clamp_min(1e-30)
    return Projection(mean, comps, scale, explained)


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of 1-D ``values`` (maximal between-class variance over a histogram)."""
    v = values.double().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    centres = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    centres = (centres[:-1] + centres[1:]) / 2
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centres).cumsum(0) / w0.clamp_min(1e-12)
    m1 = ((hist * centres).sum() - (hist * centres).cumsum(0)) / w1.clamp_min(1e-12)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    best = (between >= between.max() * (1 - 1e-9)).nonzero()[:, 0]  # a flat top: an empty gap
    i, j = int(best[0]), int(best[-1])
    return float((centres[i] + centres[j + 1]) / 2)  # the middle of the gap between the classes


def percentiles(p: torch.Tensor, q: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel robust range of (n, k) projections (``q`` in percent)."""
    p = p.double()
    if p.shape[0] > 2_000_000:  # torch.quantile's input limit: an even subsample
        p = p[torch.linspace(0, p.shape[0] - 1, 2_000_000).long()]
    qs = torch.tensor([q[0] / 100, q[1] / 100], dtype=torch.float64, device=p.device)
    r = torch.quantile(p, qs, dim=0)
    return r[0], r[1]


@dataclass
class DenseBasis:
    """Both PCA stages and the foreground rule: all that is needed to colour new patches."""

    normalisation: str
    feature_dim: int
    first: Projection
    foreground: bool  # stage 2 on foreground patches (else RGB = stage 1's components)
    threshold: float  # on stage 1's first component
    fg_sign: int  # +1: foreground where PC1 > threshold; -1: where PC1 < threshold
    second: Projection | None = None
    threshold_rule: str = "otsu"
    sign_rule: str = "auto"
    provenance: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # what deviated from the recipe (logged, in summary.json and on the figure)

    def pc1(self, x: torch.Tensor) -> torch.Tensor:
        return self.first.project(normalise(x, self.normalisation))[:, 0]

    def foreground_of(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) bool: which of the (n, D) patches are foreground (all when disabled)."""
        if not self.foreground:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return (self.pc1(x) - self.threshold) * self.fg_sign > 0

    def apply(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(n, D) patches -> ``rgb`` (n, 3) in [0, 1] (background black), ``pc1`` (n,) and
        ``foreground`` (n,) bool."""
        if x.shape[-1] != self.feature_dim:
            raise ValueError(f"PCA basis of feature dimension {self.feature_dim} applied to {x.shape[-1]}-dim features")
        z = normalise(x, self.normalisation)
        p1 = self.first.project(z)
        fg = self.foreground_of(x)
        proj = self.second if self.second is not None else self.first
        rgb = proj.scaled(proj.project(z) if self.second is not None else p1)
        rgb = torch.where(fg[:, None], rgb, torch.zeros_like(rgb))
        return {"rgb": rgb.float(), "pc1": p1[:, 0].float(), "foreground": fg}

    # ---------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        arrays: dict[str, Any] = {
            "normalisation": np.array(self.normalisation), "feature_dim": np.array(self.feature_dim),
            "foreground": np.array(self.foreground), "threshold": np.array(self.threshold),
            "fg_sign": np.array(self.fg_sign), "threshold_rule": np.array(self.threshold_rule),
            "sign_rule": np.array(self.sign_rule),
            "provenance": np.array(repr(self.provenance)),
        }
        for name, proj in (("first", self.first), ("second", self.second)):
            if proj is None:
                continue
            for key in ("mean", "components", "scale", "explained", "lo", "hi"):
                arrays[f"{name}_{key}"] = getattr(proj, key).double().cpu().numpy()
        path = Path(path)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        write_with(path, write)
        return path

    @classmethod
    def load(cls, path: str | Path, feature_dim: int | None = None) -> DenseBasis:
        """A saved basis (a ``pca_basis.npz`` or a run directory holding one); refuses one of
        another feature dimension than ``feature_dim``."""
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / BASIS_FILE
        if not p.is_file():
            raise FileNotFoundError(f"task.basis_from: no PCA basis at {p} (a {BASIS_FILE} or a run dir holding one)")
        with np.load(p, allow_pickle=False) as z:
            dim = int(z["feature_dim"])
            if feature_dim is not None and dim != int(feature_dim):
                raise ValueError(f"task.basis_from={path}: basis of feature dimension {dim}, but the layer has "
                                 f"{feature_dim}-dim features (another architecture or layer)")

            def proj(name: str) -> Projection | None:
                if f"{name}_mean" not in z:
                    return None
                return Projection(*(torch.from_numpy(z[f"{name}_{k}"]) for k in
                                    ("mean", "components", "scale", "explained", "lo", "hi")))

            first = proj("first")
            assert first is not None, f"{p}: no first-stage PCA"
            return cls(str(z["normalisation"]), dim, first, bool(z["foreground"]), float(z["threshold"]),
                       int(z["fg_sign"]), proj("second"), str(z["threshold_rule"]), str(z["sign_rule"]),
                       {"file": str(p), "saved": str(z["provenance"])})


def fit_basis(chunks: Chunks, dim: int, normalisation: str = "none", foreground: bool = True,
              threshold: float | None = None, fg_sign: str = "auto",
              q: tuple[float, float] = (1.0, 99.0), provenance: dict[str, Any] | None = None) -> DenseBasis:
    """Fit both stages on the streamed patches (see the module docstring). ``threshold`` None:
    Otsu on PC1; ``fg_sign``: auto (foreground = the smaller side) | positive | negative."""
    if fg_sign not in ("auto", "positive", "negative"):
        raise ValueError(f"foreground sign {fg_sign!r}: expected auto, positive or negative")
    first = fit_projection(chunks, dim, 3, normalisation)
    parts = [first.project(normalise(x, normalisation)) for x in chunks()]
    p = torch.cat(parts)
    first.lo, first.hi = percentiles(p, q)
    thr = otsu_threshold(p[:, 0]) if threshold is None else float(threshold)
    above = float((p[:, 0] > thr).double().mean())
    sign = {"positive": 1, "negative": -1}.get(fg_sign, 1 if above <= 0.5 else -1)
    basis = DenseBasis(str(normalisation), int(dim), first, bool(foreground), thr, sign,
                       threshold_rule="otsu" if threshold is None else "given", sign_rule=fg_sign,
                       provenance=dict(provenance or {}))
    if not foreground:
        return basis
    fg = (p[:, 0] - thr) * sign > 0
    if int(fg.sum()) < 4:  # no second PCA of 3 components on fewer: colours from the first
        basis.note = (f"only {int(fg.sum())} foreground patches (PC1 threshold {thr:.4g}): no second PCA, "
                      "foreground coloured by the first PCA")
        log.warning("PCA foreground: %s", basis.note)
        return basis
    keep = [(q[:, 0] - thr) * sign > 0 for q in parts]
    basis.second = fit_projection(chunks, dim, 3, normalisation, keep)
    p2 = torch.cat([basis.second.project(normalise(x, normalisation)[m]) for x, m in zip(chunks(), keep)])
    basis.second.lo, basis.second.hi = percentiles(p2, q)
    return basis


def tensor_chunks(x: torch.Tensor | np.ndarray, rows: int = 16384) -> Chunks:
    """A :data:`Chunks` over the rows of a (n, D) tensor or array (a memmap streams from disk)."""

    def gen() -> Iterator[torch.Tensor]:
        for s in range(0, x.shape[0], rows):
            part = x[s : s + rows]
            yield part if isinstance(part, torch.Tensor) else torch.from_numpy(np.asarray(part, dtype=np.float32))

    return gen
