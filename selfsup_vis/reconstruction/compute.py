"""Reconstruct a batch with exactly the given masks and turn the outputs into panels, errors and
the arrays behind the figures (shared by task=reconstruct and the ReconstructionDump callback)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup_vis.reconstruction.masks import algorithm_of, mask_grid
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


@torch.no_grad()
def reconstruct_batch(model: Any, images: torch.Tensor, masks: torch.Tensor,
                      names: Sequence[str]) -> list[Reconstruction]:
    """Run ``model.reconstruct`` on normalised ``images`` (B, 3, H, W) with exactly ``masks``
    (B, g, g) and turn the outputs into per-image panels and errors."""
    algo = algorithm_of(model)
    device = next(model.parameters()).device
    images = images.to(device)
    masks = masks.to(device)
    out = model.reconstruct(images, mask=masks)
    used = out["mask"].reshape(masks.shape)
    if not torch.equal(used.long(), masks.long()):
        raise RuntimeError(f"{type(model).__name__}.reconstruct used another mask than the one given")
    B, g = images.shape[0], mask_grid(model)
    m_flat = used.reshape(B, -1).float()
    pix = out["mask_pixels"].float()  # (B, 1, H, W)
    results = []
    if algo in ("mae", "maskfeat"):
        per_patch = ((out["pred"].float() - out["target"].float()) ** 2).mean(-1)  # (B, L)
    else:
        se = ((out["pred"].float() - images.float()) ** 2).mean(1, keepdim=True)  # (B, 1, H, W)
        per_patch = torch.nn.functional.avg_pool2d(se, model.patch_size).reshape(B, -1)
    errors = (per_patch * m_flat).sum(1) / m_flat.sum(1).clamp(min=1)
    size = images.shape[-1]
    for i in range(B):
        mask_np = used[i].long().cpu().numpy()
        arrays: dict[str, np.ndarray] = {"per_patch_error": per_patch[i].cpu().numpy()}
        if algo == "maskfeat":
            disp = out["image_display"][i]
            orig = _hwc(disp)
            masked = _hwc(disp * (1 - pix[i]))
            pp = per_patch[i].cpu().numpy()
            vmax = float(np.percentile(pp[mask_np.reshape(-1) == 1], 99)) if mask_np.any() else 1.0
            heat = _heat(pp, mask_np, g, size, vmax)
            mixed_view = masked + heat * pix[i, 0].cpu().numpy()[..., None]
            tgt = out["target_cells"][i].float().mean(0).cpu().numpy()  # (nbins, h, w)
            prd = out["pred_cells"][i].float().mean(0).cpu().numpy()
            r = tgt.shape[-1] // g
            cell_mask = np.kron(mask_np, np.ones((r, r))).astype(np.float32)
            hog = [tgt, tgt * (1 - cell_mask), prd, tgt * (1 - cell_mask) + prd * cell_mask]
            panels = ReconstructionPanels(
                names[i], [orig, masked, heat, mixed_view],
                pixel_titles=("original", "masked", "HOG error (masked patches)", "visible + HOG error"),
                hog=hog, hog_cell_px=size // tgt.shape[-1], cell_mask=cell_mask)
            arrays.update(target_cells=out["target_cells"][i].cpu().numpy(),
                          pred_cells=out["pred_cells"][i].cpu().numpy(),
                          pred=out["pred"][i].cpu().numpy(), target=out["target"][i].cpu().numpy())
            results.append(Reconstruction(names[i], algo, mask_np, orig, panels, float(errors[i]),
                                          "hog_mse", None, arrays))
            continue
        p = {k: _hwc(v[i]) for k, v in out["panels"].items()}
        orig, rec = p["original"], p["reconstruction"]
        pm = pix[i, 0].cpu().numpy()
        disp_err = float((((rec - orig) ** 2).mean(-1) * pm).sum() / max(pm.sum(), 1))
        panels = ReconstructionPanels(names[i], [orig, p["masked"], rec, p["reconstruction_visible"]])
        arrays.update(reconstruction_raw=out["reconstruction"][i].float().cpu().numpy())
        if algo == "mae":
            arrays.update(pred=out["pred"][i].cpu().numpy(), target=out["target"][i].cpu().numpy())
        kind = "norm_pix_mse" if algo == "mae" and model.norm_pix else "pixel_mse"
        results.append(Reconstruction(names[i], algo, mask_np, orig, panels, float(errors[i]),
                                      kind, disp_err, arrays))
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
