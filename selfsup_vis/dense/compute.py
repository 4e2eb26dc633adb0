"""The dense stages composed: extract patch grids in batches (features streamed into a
per-layer store, optionally a memory-mapped ``.npy``), then per layer the PCA basis (joint or
per image), PCA-RGB and foreground, similarity from a query patch, mutual matches between image
pairs, token norms and outliers, and the foreground IoU where object masks are known."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selfsup_vis.dense.grids import patch_grids
from selfsup_vis.dense.metric import ForegroundIoU, centre_blob, foreground_pixels
from selfsup_vis.dense.norms import NormStats, norm_maps, norm_stats
from selfsup_vis.dense.pca import DenseBasis, fit_basis, tensor_chunks
from selfsup_vis.dense.similarity import (
    Matches,
    auto_query,
    mutual_matches,
    query_patch,
    similarity_maps,
)


@dataclass
class DenseSettings:
    """The choices stated on every figure and in summary.json (defaults: config/dense.py)."""

    normalisation: str = "none"
    basis: str = "joint"  # joint | per_image
    foreground: bool = True
    threshold: float | None = None  # None: Otsu on PC1
    fg_sign: str = "auto"
    percentiles: tuple[float, float] = (1.0, 99.0)
    outlier_k: float = 6.0
    queries: list[list[float]] = field(default_factory=list)  # [[y, x], ...] input pixels of image 0
    top_k: int = 20
    max_pairs: int = 3

    def describe(self) -> str:
        thr = "Otsu" if self.threshold is None else f"{self.threshold:g}"
        fg = f"fg: PC1 {thr}, sign {self.fg_sign}" if self.foreground else "no fg split"
        return (f"PCA {self.basis} · norm {self.normalisation} · {fg} · "
                f"RGB p{self.percentiles[0]:g}–p{self.percentiles[1]:g} · outliers > median + {self.outlier_k:g}·MAD")


@dataclass
class LayerFeatures:
    """One layer's patches of all images, (n·h·w, C) in a tensor or a memory-mapped array."""

    layer: str
    grid: tuple[int, int]
    patches: Any
    norms: torch.Tensor  # (n, h, w)
    cls: torch.Tensor | None
    registers: torch.Tensor | None

    @property
    def dim(self) -> int:
        if self.patches is None:
            raise ValueError(f"layer {self.layer}: only its norms were kept")
        return int(self.patches.shape[1])

    def image(self, i: int) -> torch.Tensor:
        h, w = self.grid
        x = self.patches[i * h * w : (i + 1) * h * w]
        return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).float().reshape(h, w, -1)


def extract(model: nn.Module, layers: Sequence[str], images: torch.Tensor, batch_size: int,
            device: torch.device, final_norm: bool = False, store_dir: Path | None = None,
            norm_layers: Sequence[str] = ()) -> dict[str, LayerFeatures]:
    """Patch grids of every layer for all ``images``, batch by batch; with ``store_dir`` the
    patches go to ``patches_<layer>.npy`` memory maps there (bounded RAM), else into tensors.
    ``norm_layers``: more layers of which only the token norms are kept (``patches`` None)."""
    n = images.shape[0]
    every = list(dict.fromkeys([*layers, *norm_layers]))
    stores: dict[str, Any] = {la: None for la in every}
    norms: dict[str, list[torch.Tensor]] = {la: [] for la in every}
    cls: dict[str, list[torch.Tensor]] = {la: [] for la in every}
    regs: dict[str, list[torch.Tensor]] = {la: [] for la in every}
    grid: dict[str, tuple[int, int]] = {}
    for s in range(0, n, batch_size):
        out = patch_grids(model, every, images[s : s + batch_size].to(device), final_norm)
        for la, g in out.items():
            h, w = grid[la] = g.grid
            norms[la].append(norm_maps(g.features).cpu())
            if g.cls is not None:
                cls[la].append(g.cls.cpu())
            if g.registers is not None:
                regs[la].append(g.registers.cpu())
            if la not in layers:
                continue
            flat = g.features.reshape(-1, g.features.shape[-1]).cpu()
            if stores[la] is None:
                shape = (n * h * w, flat.shape[1])
                stores[la] = (np.lib.format.open_memmap(store_dir / f"patches_{la}.npy", "w+", np.float32, shape)
                              if store_dir is not None else torch.empty(shape))
            rows = slice(s * h * w, s * h * w + flat.shape[0])
            stores[la][rows] = flat.numpy() if store_dir is not None else flat
    for la in layers:
        if isinstance(stores[la], np.memmap):
            stores[la].flush()
    return {la: LayerFeatures(la, grid[la], stores[la], torch.cat(norms[la]),
                              torch.cat(cls[la]) if cls[la] else None,
                              torch.cat(regs[la]) if regs[la] else None) for la in every}


@dataclass
class LayerResult:
    layer: str
    grid: tuple[int, int]
    rgb: torch.Tensor  # (n, h, w, 3)
    pc1: torch.Tensor  # (n, h, w)
    foreground: torch.Tensor  # (n, h, w) bool
    query: tuple[int, int, int]  # (image, row, col)
    similarity: torch.Tensor  # (q, n, h, w): one map set per query
    norms: torch.Tensor
    outliers: torch.Tensor
    norm_stats: NormStats
    matches: list[tuple[int, int, Matches]]
    basis: DenseBasis | None  # the joint basis (None: per-image bases)
    pca_seconds: float
    iou: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)  # deviations from the recipe, per image


def fit(feats: LayerFeatures, s: DenseSettings, provenance: dict[str, Any] | None = None) -> DenseBasis:
    return fit_basis(tensor_chunks(feats.patches), feats.dim, s.normalisation, s.foreground, s.threshold,
                     s.fg_sign, tuple(s.percentiles), provenance)


def analyse(feats: LayerFeatures, s: DenseSettings, image_size: tuple[int, int],
            basis: DenseBasis | None = None, masks: torch.Tensor | None = None,
            provenance: dict[str, Any] | None = None) -> LayerResult:
    """Everything about one layer (``basis`` given: applied as is, never refitted)."""
    n = feats.norms.shape[0]
    h, w = feats.grid
    t0 = time.perf_counter()
    if basis is not None and basis.feature_dim != feats.dim:
        raise ValueError(f"PCA basis of feature dimension {basis.feature_dim}; layer {feats.layer} has {feats.dim}")
    if basis is None and s.basis == "joint":
        basis = fit(feats, s, provenance)
    parts, notes = [], [f"joint basis: {basis.note}"] if basis is not None and basis.note else []
    for i in range(n):
        x = feats.image(i).reshape(h * w, -1)
        b = basis if basis is not None else fit_basis(tensor_chunks(x), feats.dim, s.normalisation, s.foreground,
                                                      s.threshold, s.fg_sign, tuple(s.percentiles))
        if b is not basis and b.note:
            notes.append(f"image {i}: {b.note}")
        parts.append(b.apply(x))
    seconds = time.perf_counter() - t0
    rgb = torch.stack([p["rgb"] for p in parts]).reshape(n, h, w, 3)
    pc1 = torch.stack([p["pc1"] for p in parts]).reshape(n, h, w)
    fg = torch.stack([p["foreground"] for p in parts]).reshape(n, h, w)
    cells = [query_patch(q, image_size, (h, w)) for q in s.queries] or [auto_query(fg[0])]
    first = feats.image(0)
    queries = torch.stack([first[r, c] for r, c in cells])  # image by image: bounded memory
    sims = torch.stack([similarity_maps(queries, feats.image(i)[None])[:, 0] for i in range(n)], 1)
    matches = []
    for i in range(min(n - 1, s.max_pairs)):
        a, b2 = feats.image(i).reshape(h * w, -1), feats.image(i + 1).reshape(h * w, -1)
        ka, kb = fg[i].flatten(), fg[i + 1].flatten()
        if s.foreground and ka.sum() >= 1 and kb.sum() >= 1:  # foreground patches only, indices kept flat
            m = mutual_matches(a[ka], b2[kb], s.top_k)
            m = Matches(ka.nonzero()[:, 0][m.a], kb.nonzero()[:, 0][m.b], m.similarity, m.num_mutual)
        else:
            m = mutual_matches(a, b2, s.top_k)
        matches.append((i, i + 1, m))
    out_mask, stats = norm_stats(feats.norms, s.outlier_k, feats.cls, feats.registers)
    res = LayerResult(feats.layer, (h, w), rgb, pc1, fg, (0, *cells[0]), sims, feats.norms, out_mask, stats,
                      matches, basis if s.basis == "joint" else None, seconds, notes=notes)
    if masks is not None:
        res.iou = foreground_iou(fg, masks)
    return res


def foreground_iou(fg: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Mean IoU of the upsampled foreground with the object masks, and the centre-blob baseline's."""
    size = (int(masks.shape[1]), int(masks.shape[2]))
    model_iou, blob_iou = ForegroundIoU(sync_on_compute=False), ForegroundIoU(sync_on_compute=False)
    model_iou.update(foreground_pixels(fg, size), masks)
    blob_iou.update(centre_blob(masks), masks)
    return {"iou": float(model_iou.compute()), "centre_blob_iou": float(blob_iou.compute()),
            "mask_area": float(masks.double().mean())}
