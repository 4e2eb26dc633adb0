"""Reconstruct a batch with exactly the given masks and turn the outputs into panels, errors and
the arrays behind the figures (shared by task=reconstruct and the ReconstructionDump callback)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup_vis.models import MaskedReconstruction
from selfsup_vis.reconstruction.display import DISPLAY_MODES, DisplayRule, display_image
from selfsup_vis.reconstruction.masks import masked_image_model
from selfsup_vis.reconstruction.plots import HeatPanel, ReconstructionPanels
from selfsup_vis.utils.io import write_with


@dataclass(frozen=True)
class DisplayOptions:
    """How reconstructions are shown: ``task.display``, ``task.display_neighbours``,
    ``task.mask_fill``, ``task.mask_outline`` (the callback has the same keys; the defaults live
    in ``config.tasks_train.ReconstructTaskConfig``)."""

    mode: str
    neighbours: int
    mask_fill: tuple[float, ...]
    outline: bool

    def __post_init__(self) -> None:
        DisplayRule(self.mode, self.neighbours, True)  # refuses a bad mode / neighbours
        if len(self.mask_fill) != 3 or not all(0 <= float(v) <= 1 for v in self.mask_fill):
            raise ValueError(f"mask_fill={list(self.mask_fill)}: expected three values in 0..1 (RGB)")

    def rule(self, norm_pix: bool) -> DisplayRule:
        return DisplayRule(self.mode, self.neighbours, norm_pix)


@dataclass
class Reconstruction:
    """One image's reconstruction: panels to draw and the numbers behind them."""

    name: str
    algorithm: str
    mask: np.ndarray  # (g, g) int, 1 = masked: the mask the model used
    original: np.ndarray  # (H, W, 3) display 0..1
    panels: ReconstructionPanels
    error: float  # mean over masked patches, in the model's target space (norm-pix / pixel / HOG MSE)
    error_kind: str
    display_error: float | None  # MSE of the shown reconstruction on masked pixels (display 0..1)
    arrays: dict[str, np.ndarray]  # extra numbers for reconstructions.npz
    psnr_db: float | None = None  # PSNR of the shown reconstruction on masked pixels (peak 1)
    display: dict[str, Any] | None = None  # the display rule (DisplayRule.to_dict)
    # per display mode: psnr_db, correlation and hidden_correlation with the original (pixels only)
    by_display: dict[str, dict[str, float]] | None = None

    @property
    def mask_ratio(self) -> float:
        return float(self.mask.mean())

    def to_dict(self) -> dict[str, Any]:
        """The numbers of summary.json's ``images`` entries."""
        return {"name": self.name, "mask_ratio": self.mask_ratio, "masked_error": self.error,
                "error_kind": self.error_kind, "error_space": "target (masked patches only)",
                "psnr_db": self.psnr_db, "display_mse": self.display_error,
                "by_display": self.by_display}


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().permute(1, 2, 0).cpu().numpy()


def _filled(img: np.ndarray, pix: np.ndarray, fill: Sequence[float]) -> np.ndarray:
    return img * (1 - pix[..., None]) + np.asarray(fill, dtype=img.dtype) * pix[..., None]


def _heat_rgb(values: np.ndarray, vmax: float) -> np.ndarray:
    """The same heat map as drawn, as RGB (black where NaN), for reconstructions.npz."""
    from matplotlib import colormaps

    v = np.clip(np.nan_to_num(values, nan=0.0) / max(vmax, 1e-12), 0, 1)
    return colormaps["magma"](v)[..., :3] * np.isfinite(values)[..., None]


def _caption(error: float, kind: str, psnr: float | None) -> str:
    text = f"masked {kind} {error:.4f} (target space)"
    return text if psnr is None else f"{text}\nPSNR {psnr:.1f} dB (shown, masked px)"


def _pixel_image(name: str, out: MaskedReconstruction, i: int, opts: DisplayOptions,
                 denormalize: Any, error: float) -> tuple[ReconstructionPanels, float, float, dict]:
    """Panels of image ``i`` in ``opts.mode``; its PSNR / MSE as shown; all modes' numbers."""
    rule = opts.rule(out.norm_pix_eps is not None)
    shown = {m: display_image(out, i, DisplayRule(m, opts.neighbours, rule.norm_pix), denormalize)
             for m in DISPLAY_MODES}
    d = shown[opts.mode]
    pix = out.mask_pixels[i, 0].float().cpu().numpy()
    panels = list(d.panels)
    panels[1] = _filled(panels[1], pix, opts.mask_fill)
    item = ReconstructionPanels(name, panels, pixel_titles=d.titles,
                                caption=_caption(error, out.error_kind, d.psnr_db),
                                mask=out.mask[i].cpu().numpy() if opts.outline else None)
    numbers = {m: {"psnr_db": v.psnr_db, "correlation": v.correlation,
                   "hidden_correlation": v.hidden_correlation} for m, v in shown.items()}
    return item, d.psnr_db, d.mse, numbers


def _feature_panels(name: str, out: MaskedReconstruction, i: int, per_patch: np.ndarray,
                    mask_np: np.ndarray, opts: DisplayOptions, error: float) -> ReconstructionPanels:
    """A feature-target model (e.g. MaskFeat's HOG): the image, the masked image, the per-patch
    error of the masked patches as a heat map (with its colour bar) alone and over the visible
    image; HOG cells when given. No pixels are predicted, so there is nothing to de-normalise."""
    g, size = mask_np.shape[0], out.original.shape[-1]
    pix = out.mask_pixels[i, 0].float().cpu().numpy()
    orig = _hwc(out.original[i])
    masked = _filled(orig, pix, opts.mask_fill)
    vmax = float(np.percentile(per_patch[mask_np.reshape(-1) == 1], 99)) if mask_np.any() else 1.0
    values = np.where(mask_np == 1, per_patch.reshape(g, g), np.nan)
    heat_rgb = np.kron(_heat_rgb(values, vmax), np.ones((size // g, size // g, 1)))
    mixed_view = orig * (1 - pix[..., None]) + heat_rgb * pix[..., None]
    label = f"{out.error_kind} per patch"
    titles = ("original", "masked", f"{out.target_name} error (masked patches)",
              f"visible + {out.target_name} error")
    common = {"pixel_titles": titles, "caption": _caption(error, out.error_kind, None),
              "mask": mask_np if opts.outline else None,
              "heat": {2: HeatPanel(values, vmax, label), 3: HeatPanel(values, vmax, label, over_image=True)}}
    if out.hog is None:
        return ReconstructionPanels(name, [orig, masked, heat_rgb, mixed_view], **common)
    tgt = out.hog["target"][i].float().mean(0).cpu().numpy()  # (nbins, h, w)
    prd = out.hog["pred"][i].float().mean(0).cpu().numpy()
    r = tgt.shape[-1] // g
    cell_mask = np.kron(mask_np, np.ones((r, r))).astype(np.float32)
    hog = [tgt, tgt * (1 - cell_mask), prd, tgt * (1 - cell_mask) + prd * cell_mask]
    return ReconstructionPanels(name, [orig, masked, heat_rgb, mixed_view], hog=hog,
                                hog_cell_px=size // tgt.shape[-1], cell_mask=cell_mask, **common)


@torch.no_grad()
def reconstruct_batch(model: Any, images: torch.Tensor, masks: torch.Tensor, names: Sequence[str],
                      opts: DisplayOptions) -> list[Reconstruction]:
    """Run ``model.reconstruct`` on normalised ``images`` (B, 3, H, W) with exactly ``masks``
    (B, g, g) and turn its :class:`MaskedReconstruction` into per-image panels (shown by
    ``opts``) and errors."""
    model = masked_image_model(model)
    device = next(model.parameters()).device
    out = model.reconstruct(images.to(device), mask=masks.to(device))
    if out.inputs is None and out.space == "pixels":  # the display needs the normalised input
        out = dataclasses.replace(out, inputs=images.to(device))
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
        err = float(errors[i])
        if out.space == "pixels":
            panels, psnr, disp_err, numbers = _pixel_image(names[i], out, i, opts, model.denormalize, err)
            rule = opts.rule(out.norm_pix_eps is not None).to_dict()
            if out.reconstruction is not None:  # norm-pix: none (its pred / target are saved)
                arrays["reconstruction_raw"] = out.reconstruction[i].float().cpu().numpy()
        else:
            panels = _feature_panels(names[i], out, i, pp, mask_np, opts, err)
            psnr, disp_err, numbers = None, None, None
            rule = {"mode": None, "rule": f"{out.target_name} target: no pixels predicted, nothing "
                                          f"to de-normalise; per-patch {out.error_kind} shown"}
        arrays.update({k: v[i].float().cpu().numpy() for k, v in out.arrays.items()})
        results.append(Reconstruction(names[i], model.schema.family, mask_np, panels.pixels[0], panels,
                                      err, out.error_kind, disp_err, arrays, psnr, rule, numbers))
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
