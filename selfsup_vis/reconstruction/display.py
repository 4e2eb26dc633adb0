"""How a pixel reconstruction is turned into pictures, without borrowing hidden information.

A norm-pix model (MAE ``norm_pix=True``) predicts each patch normalised by its own mean and std.
MMSelfSup (and facebookresearch/mae's demo) de-normalise a masked patch with *that patch's own*
statistics, taken from the original image: the display then carries each hidden patch's
brightness and contrast, so even a random-weight model traces the object's silhouette
(facebookresearch/mae#174, #197; MAE-pytorch#40). The default here (``visible``) de-normalises
each masked patch with statistics from visible patches only: the mean of the ``k`` nearest
visible patches' means and variances (Euclidean distance on the patch grid, ties by patch
index). ``original`` is MMSelfSup's way, labelled as such; ``normalized`` shows prediction and
target in the model's own target space. A model without per-patch normalisation needs no
de-normalisation: all modes but ``normalized`` show the prediction as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from selfsup_vis.models import MaskedReconstruction
from selfsup_vis.models.mae import patchify, unpatchify

DISPLAY_MODES = ("visible", "original", "normalized")
#: normalized display: a target-space value v is shown as 0.5 + v / (2 * NORM_RANGE), clipped
NORM_RANGE = 3.0


@dataclass(frozen=True)
class DisplayRule:
    """Which statistics a displayed masked patch uses; ``text`` goes on the figure and
    ``to_dict`` into summary.json."""

    mode: str
    neighbours: int
    norm_pix: bool

    def __post_init__(self) -> None:
        if self.mode not in DISPLAY_MODES:
            raise ValueError(f"task.display={self.mode!r}: expected one of {', '.join(DISPLAY_MODES)}")
        if self.neighbours < 1:
            raise ValueError(f"task.display_neighbours={self.neighbours}: must be >= 1")

    @property
    def text(self) -> str:
        if self.mode == "normalized":
            space = "per-patch normalised pixels" if self.norm_pix else "model-normalised pixels"
            return (f"display=normalized: prediction and target in the model's target space "
                    f"({space}), shown as 0.5 + v/{2 * NORM_RANGE:g}")
        if not self.norm_pix:
            return (f"display={self.mode}: the model predicts pixels (no per-patch normalisation); "
                    f"shown as predicted, nothing to de-normalise")
        if self.mode == "original":
            return ("display=original (MMSelfSup's way): masked patches de-normalised with their own "
                    "mean/std — uses the hidden patches' statistics")
        return (f"display=visible: masked patches de-normalised with the mean/std of their "
                f"{self.neighbours} nearest visible patches (grid distance) — no hidden statistics")

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "norm_pix": self.norm_pix, "rule": self.text,
                "neighbours": self.neighbours if self.mode == "visible" and self.norm_pix else None,
                "uses_hidden_statistics": self.mode == "original" and self.norm_pix}


@dataclass
class DisplayedImage:
    """The four pixel panels (H, W, 3 in 0..1) of one image in one display mode, their titles
    and the numbers measured on what is shown (masked pixels only)."""

    panels: list[np.ndarray]
    titles: tuple[str, ...]
    psnr_db: float  # panel 3 (what the model filled in) against its reference, masked pixels
    mse: float
    correlation: float  # Pearson r of displayed vs original masked pixels
    hidden_correlation: float  # the same beyond what the visible patches say (hidden_correlation)


def nearest_visible(mask: np.ndarray, k: int) -> np.ndarray:
    """(L, k') indices of each patch's ``k`` nearest visible patches (k' = min(k, visible));
    Euclidean distance on the (g, g) patch grid, ties broken by patch index."""
    g = mask.shape[0]
    flat = mask.reshape(-1)
    vis = np.flatnonzero(flat == 0)
    if vis.size == 0:
        raise ValueError("display=visible: every patch is masked, there are no visible statistics")
    yx = np.stack(np.divmod(np.arange(g * g), g), -1).astype(np.float64)
    d = ((yx[:, None, :] - yx[None, vis, :]) ** 2).sum(-1)  # (L, V)
    order = np.lexsort((np.broadcast_to(vis, d.shape), d), axis=-1)[:, : min(k, vis.size)]
    return vis[order]


def patch_statistics(out: MaskedReconstruction, i: int, mode: str, k: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 1) mean and std each patch of image ``i`` is de-normalised with: its own (``original``)
    or, for masked patches, those of its ``k`` nearest visible patches (``visible``)."""
    assert out.inputs is not None and out.norm_pix_eps is not None
    raw = patchify(out.inputs[i : i + 1].float(), out.patch_size)[0]  # (L, D)
    mean, var = raw.mean(-1), raw.var(-1)
    if mode == "visible":
        mask = out.mask[i].cpu().numpy()
        nb = torch.as_tensor(nearest_visible(mask, k), device=raw.device)
        masked = torch.as_tensor(mask.reshape(-1) == 1, device=raw.device)
        mean = torch.where(masked, mean[nb].mean(-1), mean)
        var = torch.where(masked, var[nb].mean(-1), var)
    return mean[:, None], (var[:, None] + out.norm_pix_eps) ** 0.5


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().permute(1, 2, 0).cpu().numpy()


def _norm_view(x: torch.Tensor) -> np.ndarray:
    return np.clip(0.5 + _hwc(x) / (2 * NORM_RANGE), 0, 1)


def masked_stats(shown: np.ndarray, reference: np.ndarray, pix: np.ndarray) -> tuple[float, float, float]:
    """PSNR (dB, peak 1), MSE and Pearson r of ``shown`` vs ``reference`` (H, W, 3 in 0..1) on the
    masked pixels ``pix`` (H, W; 1 = masked)."""
    sel = pix.astype(bool)
    a, b = np.clip(shown[sel], 0, 1).reshape(-1), np.clip(reference[sel], 0, 1).reshape(-1)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    mse = float(np.mean((a - b) ** 2))
    psnr = float(10 * np.log10(1.0 / max(mse, 1e-12)))
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    return psnr, mse, r


def visible_baseline(original: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """(H, W, 3): each masked patch filled with the per-channel mean of its ``k`` nearest visible
    patches of ``original`` (visible patches unchanged): what the visible patches alone say."""
    g = mask.shape[0]
    H, W, C = original.shape
    r = H // g
    patches = original.reshape(g, r, g, r, C).transpose(0, 2, 1, 3, 4).reshape(g * g, r * r, C)
    means = patches.mean(1)  # (L, C)
    nb = nearest_visible(mask, k)
    fill = np.where(mask.reshape(-1, 1) == 1, means[nb].mean(1), np.nan)  # (L, C)
    out = np.repeat(np.repeat(fill.reshape(g, g, C), r, 0), r, 1)
    return np.where(np.isnan(out), original, out)


def hidden_correlation(shown: np.ndarray, original: np.ndarray, mask: np.ndarray, k: int) -> float:
    """Pearson r, on masked pixels, of (shown - baseline) with (original - baseline), the baseline
    being :func:`visible_baseline`: how much the display says about the hidden pixels beyond
    what the visible patches say. ~0 for a random model shown without hidden statistics."""
    g = mask.shape[0]
    r = original.shape[0] // g
    pix = np.kron(mask, np.ones((r, r))).astype(bool)
    base = visible_baseline(original, mask, k)
    a = (np.clip(shown, 0, 1) - base)[pix].reshape(-1)
    b = (original - base)[pix].reshape(-1)
    if a.size == 0 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def display_image(out: MaskedReconstruction, i: int, rule: DisplayRule,
                  denormalize: Callable[[torch.Tensor], torch.Tensor]) -> DisplayedImage:
    """Image ``i`` of a pixel-space reconstruction shown by ``rule``: original, masked,
    reconstruction, reconstruction + visible (``normalized``: original, masked, target and
    prediction + visible target, both in the target space). ``denormalize`` maps the model's
    normalised pixels to display 0..1."""
    if out.space != "pixels" or (out.reconstruction is None and out.norm_pix_eps is None):
        raise ValueError("display_image: needs a pixel-space reconstruction")
    pix_t = out.mask_pixels[i : i + 1].float()
    pix = pix_t[0, 0].cpu().numpy()
    orig = _hwc(out.original[i])
    if rule.mode == "normalized":
        if out.norm_pix_eps is not None:
            tgt, prd = unpatchify(out.target[i : i + 1].float(), out.patch_size), \
                unpatchify(out.pred[i : i + 1].float(), out.patch_size)
        elif out.inputs is not None:
            tgt, prd = out.inputs[i : i + 1].float(), out.reconstruction[i : i + 1].float()
        else:
            raise ValueError("task.display=normalized: this model's reconstruct() does not return its "
                             "normalised inputs (MaskedReconstruction.inputs); use display=visible")
        t_img, p_img = _norm_view(tgt[0]), _norm_view((tgt * (1 - pix_t) + prd * pix_t)[0])
        psnr, mse, _ = masked_stats(p_img, t_img, pix)
        rec_disp = p_img
        panels = [orig, orig, t_img, p_img]
        titles = ("original", "masked", "target (target space)", "prediction + visible target")
    else:
        if out.norm_pix_eps is not None and rule.norm_pix:
            mean, std = patch_statistics(out, i, rule.mode, rule.neighbours)
            rec = unpatchify((out.pred[i].float() * std + mean)[None], out.patch_size)
        else:
            rec = out.reconstruction[i : i + 1].float()
        rec_disp = _hwc(denormalize(rec)[0])
        mixed = orig * (1 - pix[..., None]) + np.clip(rec_disp, 0, 1) * pix[..., None]
        psnr, mse, _ = masked_stats(rec_disp, orig, pix)
        panels = [orig, orig, rec_disp, mixed]
        suffix = {"visible": " (visible stats)", "original": " (hidden stats!)"}.get(rule.mode, "") \
            if rule.norm_pix else ""
        titles = ("original", "masked", f"reconstruction{suffix}", "reconstruction + visible")
    _, _, corr = masked_stats(rec_disp, orig, pix)
    hidden = hidden_correlation(rec_disp, orig, out.mask[i].cpu().numpy(), rule.neighbours)
    return DisplayedImage(panels, titles, psnr, mse, corr, hidden)
