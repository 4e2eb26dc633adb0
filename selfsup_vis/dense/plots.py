"""Figures of dense features: per layer one figure, a row per image with the columns image |
PCA-RGB | foreground | similarity from the query | token-norm map (every grid upsampled to the
image bilinearly, as the title says); mutual matches between image pairs drawn as lines; and the
token norms layer by layer. Every figure carries the run's provenance footer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch

from selfsup_vis.dense.compute import LayerResult
from selfsup_vis.dense.norms import NormStats
from selfsup_vis.plotting.layout import wrap_label
from selfsup_vis.plotting.log import new_figure
from selfsup_vis.plotting.mosaic import Mosaic, blend, colorize, panel_size, resize
from selfsup_vis.plotting.provenance import ProvenanceLike, add_provenance

COLUMNS = ("image", "PCA → RGB", "foreground (PC1)", "similarity to ★", "token norm")


def layer_figure(display: np.ndarray, res: LayerResult, names: Sequence[str], title: str, settings: str,
                 prov: ProvenanceLike | None, masks: np.ndarray | None = None, max_rows: int = 8) -> Figure:
    """Rows of images (at most ``max_rows``), the five columns of :data:`COLUMNS`; the object
    mask (when known) as a cyan outline on the foreground, outlier tokens ringed on the norm map.
    Drawn as one :class:`~selfsup_vis.plotting.mosaic.Mosaic` (a training snapshot draws this
    every time)."""
    n = min(len(display), max_rows)
    H, W = display.shape[1:3]
    h, w = res.grid
    mo = Mosaic(n, len(COLUMNS), panel_size((H, W)), title_lines=1, title_pt=8, left_px=22)
    qi, qr, qc = res.query
    sim_lo, sim_hi = float(res.similarity[0].min()), 1.0
    sim_min = -1.0 if sim_lo < 0 else 0.0
    norm_lo, norm_hi = float(res.norms.min()), float(res.norms.max())
    rings: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(n):
        image = resize(np.clip(display[i], 0, 1), mo.panel)
        fg = resize(res.foreground[i].float().numpy(), mo.panel) >= 0.5  # as foreground_pixels: bilinear, >= 0.5
        mo.put(i, 0, image)
        mo.put(i, 1, resize(res.rgb[i].numpy(), mo.panel))
        mo.put(i, 2, blend(image, np.repeat(fg[..., None], 3, -1).astype(np.float32), 0.6))
        if masks is not None:
            mo.outline_mask(i, 2, masks[i])
        mo.put(i, 3, colorize(resize(res.similarity[0, i].numpy(), mo.panel), "RdBu_r", sim_min, sim_hi))
        mo.put(i, 4, colorize(resize(res.norms[i].numpy(), mo.panel), "viridis", norm_lo, norm_hi))
        oy, ox = res.outliers[i].nonzero(as_tuple=True)
        if len(oy):
            rings.append(mo.xy(i, 4, ox.numpy(), oy.numpy(), (h, w)))
        mo.row_label(i, wrap_label(names[i], 30, max_lines=2))
    for c, name in enumerate(COLUMNS):
        mo.title(0, c, name)
    st = res.norm_stats
    iou = f" · fg IoU {res.iou['iou']:.3f} (centre blob {res.iou['centre_blob_iou']:.3f})" if res.iou else ""
    text = (f"{title}\ngrid {h}×{w}, overlays upsampled bilinearly · {settings}\n"
            f"outliers {100 * st.outlier_fraction:.2f}% (> {st.threshold:.3g}){iou}"
            + (f"\nNOTE: {len(res.notes)} deviation(s), e.g. {res.notes[0]}" if res.notes else ""))
    fig = mo.figure(text, bottom_in=0.75)
    assert mo.ax is not None
    mo.ax.plot(*mo.xy(qi, 3, qc, qr, (h, w)), marker="*", color="yellow", markersize=10, markeredgecolor="k")
    if rings:
        mo.ax.scatter(np.concatenate([x for x, _ in rings]), np.concatenate([y for _, y in rings]), s=40,
                      facecolors="none", edgecolors="red", linewidths=0.8)
    for col, (cmap, lo, hi, label) in ((3, ("RdBu_r", sim_min, sim_hi, "cosine similarity")),
                                       (4, ("viridis", norm_lo, norm_hi, "L2 norm (red rings: outliers)"))):
        x0 = mo.origin(0, col)[0] / mo.dpi
        mo.colorbar((x0 + 0.1 * mo.pw / mo.dpi, 0.45, 0.8 * mo.pw / mo.dpi, 0.1), cmap, lo, hi, label,
                    orientation="horizontal")
    if prov is not None:
        add_provenance(fig, prov)
    return fig


def matches_figure(img_a: np.ndarray, img_b: np.ndarray, grid: tuple[int, int], a: torch.Tensor,
                   b: torch.Tensor, sim: torch.Tensor, num_mutual: int, title: str,
                   prov: ProvenanceLike | None) -> Figure:
    """Two images side by side, each shown mutual match (flat patch indices ``a`` <-> ``b``) a
    line between patch centres, coloured by its similarity."""
    H, W = img_a.shape[:2]
    h, w = grid
    fig = new_figure(6.5, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(img_a)
    ax2.imshow(img_b)
    cm = colormaps["plasma"]
    lo, hi = (float(sim.min()), float(sim.max())) if len(sim) else (0.0, 1.0)
    for ia, ib, s in zip(a.tolist(), b.tolist(), sim.tolist(), strict=True):
        ya, xa = divmod(ia, w)
        yb, xb = divmod(ib, w)
        pa = ((xa + 0.5) * W / w - 0.5, (ya + 0.5) * H / h - 0.5)
        pb = ((xb + 0.5) * W / w - 0.5, (yb + 0.5) * H / h - 0.5)
        colour = cm((s - lo) / (hi - lo) if hi > lo else 1.0)
        fig.add_artist(ConnectionPatch(pa, pb, "data", "data", axesA=ax1, axesB=ax2, color=colour, lw=0.8))
        ax1.plot(*pa, "o", ms=2, color=colour)
        ax2.plot(*pb, "o", ms=2, color=colour)
    for ax in (ax1, ax2):
        ax.axis("off")
    fig.suptitle(f"{title}\n{num_mutual} mutual nearest-neighbour pairs, top {len(sim)} drawn "
                 f"(cosine {lo:.2f}..{hi:.2f})", fontsize=8)
    if prov is not None:
        add_provenance(fig, prov)
    return fig


def norms_figure(stats: Mapping[str, NormStats], title: str, prov: ProvenanceLike | None) -> Figure:
    """Layer by layer: median patch norm, outlier threshold and max; CLS and register norms
    apart; and the fraction of outlier patches."""
    layers = list(stats)
    x = np.arange(len(layers))
    fig = new_figure(max(5.0, 0.6 * len(layers) + 2.5), 5.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    get = lambda k: np.array([np.nan if getattr(stats[la], k) is None else getattr(stats[la], k)  # noqa: E731
                              for la in layers], dtype=float)
    ax1.plot(x, get("median"), "o-", label="patch norm (median)")
    ax1.plot(x, get("threshold"), "--", color="0.4", label="outlier threshold (median + k·MAD)")
    ax1.plot(x, get("max_norm"), "^:", label="patch norm (max)")
    if np.isfinite(get("cls_mean")).any():
        ax1.plot(x, get("cls_mean"), "s-", label="CLS token")
    if np.isfinite(get("register_mean")).any():
        ax1.plot(x, get("register_mean"), "D-", label="register tokens (mean)")
    ax1.set_ylabel("L2 norm")
    ax1.legend(fontsize=6)
    ax2.bar(x, 100 * get("outlier_fraction"), color="tab:red")
    ax2.set_ylabel("outlier patches (%)")
    ax2.set_xticks(x, layers, rotation=45, fontsize=7)
    k = next(iter(stats.values())).k if stats else float("nan")
    fig.suptitle(f"{title}\ntoken norms per layer · outliers: norm > median + {k:g}·MAD", fontsize=8)
    if prov is not None:
        add_provenance(fig, prov)
    return fig
