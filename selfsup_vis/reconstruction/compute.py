"""Reconstruct a batch with exactly the given masks and turn the outputs into panels, errors and
the arrays behind the figures (shared by task=reconstruct and the ReconstructionDump callback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup_vis.models import MaskedReconstruction
from selfsup_vis.reconstruction.masks import masked_image_model
from selfsup_vis.reconstruction.plots import ReconstructionPanels
from selfsup_vis.utils.io import write_with


@dataclass
class Reconstruction:
    """One image's reconstruction: panels to draw and the numbers behind them."""

    name: str
    algorithm: str
    mask: np.ndarray  # (g, g) int, 1 = masked: the mask the model used
    original: np.ndarray  # (H, W, 3) display 0..1
    panels: ReconstructionPanels
    error: float  # mean over masked patches: normalised-pixel MSE (MAE/SimMIM) or HOG MSE
    error_kind: str
    display_error: float | None  # pixel MSE in display space (0..1) on masked pixels
    arrays: dict[str, np.ndarray]  # extra numbers for reconstructions.npz

    @property
    def mask_ratio(self) -> float:
        return float(self.mask.mean())


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().permute(1, 2, 0).cpu().numpy()


def _heat(values: np.ndarray, mask: np.ndarray, grid: int, size: int, vmax: float) -> np.ndarray:
    """Per-patch values of the masked patches as a colour image (H, W, 3), black elsewhere."""
    from matplotlib import colormaps

    v = np.clip(values.reshape(grid, grid) / max(vmax, 1e-12), 0, 1)
    rgb = colormaps["magma"](v)[..., :3] * mask.reshape(grid, grid)[..., None]
    r = size // grid
    return np.kron(rgb, np.ones((r, r, 1)))


def _pixel_panels(name: str, out: MaskedReconstruction, i: int) -> tuple[ReconstructionPanels, float]:
    """The four pixel panels of image ``i`` and its display-space MSE on masked pixels."""
    p = {k: _hwc(v[i]) for k, v in out.panels.items()}
    orig, rec = p["original"], p["reconstruction"]
    pm = out.mask_pixels[i, 0].float().cpu().numpy()
    disp_err = float((((rec - orig) ** 2).mean(-1) * pm).sum() / max(pm.sum(), 1))
    return ReconstructionPanels(name, [orig, p["masked"], rec, p["reconstruction_visible"]]), disp_err


def _feature_panels(name: str, out: MaskedReconstruction, i: int, per_patch: np.ndarray,
                    mask_np: np.ndarray) -> ReconstructionPanels:
    """A feature-target model (e.g. MaskFeat's HOG): the image, the masked image, the per-patch
    error of the masked patches as a heat map and over the visible image; HOG cells when given."""
    g, size = mask_np.shape[0], out.original.shape[-1]
    disp = out.original[i]
    pix = out.mask_pixels[i].float()
    orig, masked = _hwc(disp), _hwc(disp * (1 - pix))
    vmax = float(np.percentile(per_patch[mask_np.reshape(-1) == 1], 99)) if mask_np.any() else 1.0
    heat = _heat(per_patch, mask_np, g, size, vmax)
    mixed_view = masked + heat * pix[0].cpu().numpy()[..., None]
    titles = ("original", "masked", f"{out.target_name} error (masked patches)",
              f"visible + {out.target_name} error")
    if out.hog is None:
        return ReconstructionPanels(name, [orig, masked, heat, mixed_view], pixel_titles=titles)
    tgt = out.hog["target"][i].float().mean(0).cpu().numpy()  # (nbins, h, w)
    prd = out.hog["pred"][i].float().mean(0).cpu().numpy()
    r = tgt.shape[-1] // g
    cell_mask = np.kron(mask_np, np.ones((r, r))).astype(np.float32)
    hog = [tgt, tgt * (1 - cell_mask), prd, tgt * (1 - cell_mask) + prd * cell_mask]
    return ReconstructionPanels(name, [orig, masked, heat, mixed_view], pixel_titles=titles, hog=hog,
                                hog_cell_px=size // tgt.shape[-1], cell_mask=cell_mask)


@torch.no_grad()
def reconstruct_batch(model: Any, images: torch.Tensor, masks: torch.Tensor,
                      names: Sequence[str]) -> list[Reconstruction]:
    """Run ``model.reconstruct`` on normalised ``images`` (B, 3, H, W) with exactly ``masks``
    (B, g, g) and turn its :class:`MaskedReconstruction` into per-image panels and errors."""
    model = masked_image_model(model)
    device = next(model.parameters()).device
    out = model.reconstruct(images.to(device), mask=masks.to(device))
    used = out.mask.reshape(masks.shape)
    if not torch.equal(used.long().cpu(), masks.long().cpu()):
        raise RuntimeError(f"{type(model).__name__}.reconstruct used another mask than the one given")
    B = images.shape[0]
    m_flat = used.reshape(B, -1).float()
    per_patch = out.per_patch_error.float().reshape(B, -1)
    errors = (per_patch * m_flat).sum(1) / m_flat.sum(1).clamp(min=1)
    results = []
    for i in range(B):
        mask_np = used[i].long().cpu().numpy()
        pp = per_patch[i].cpu().numpy()
        arrays: dict[str, np.ndarray] = {"per_patch_error": pp}
        if out.space == "pixels":
            panels, disp_err = _pixel_panels(names[i], out, i)
            arrays["reconstruction_raw"] = out.reconstruction[i].float().cpu().numpy()
        else:
            panels, disp_err = _feature_panels(names[i], out, i, pp, mask_np), None
        arrays.update({k: v[i].float().cpu().numpy() for k, v in out.arrays.items()})
        results.append(Reconstruction(names[i], model.schema.family, mask_np, panels.pixels[0], panels,
                                      float(errors[i]), out.error_kind, disp_err, arrays))
    return results


def save_arrays(path: Path, recs: Sequence[Reconstruction]) -> Path:
    """Everything behind the figures in one ``.npz`` (stacked over images)."""
    data: dict[str, np.ndarray] = {
        "names": np.asarray([r.name for r in recs]),
        "mask": np.stack([r.mask for r in recs]).astype(np.uint8),
        "original": np.stack([r.original for r in recs]).astype(np.float32),
        "panels": np.stack([np.stack(r.panels.pixels) for r in recs]).astype(np.float32),
        "error": np.asarray([r.error for r in recs], dtype=np.float64),
    }
    data["reconstruction"] = data["panels"][:, 2]
    for key in recs[0].arrays:
        data[key] = np.stack([r.arrays[key] for r in recs]).astype(np.float32)
    return write_with(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **data))
