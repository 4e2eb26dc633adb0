"""Figures of what a pipeline produces: views side by side with their sizes, masks overlaid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from selfsup_vis.data.transforms import Pipeline, denormalize
from selfsup_vis.plotting.layout import block_columns, wrap_label
from selfsup_vis.plotting.log import new_figure
from selfsup_vis.plotting.text import plain


def to_display(x: torch.Tensor, pipeline: Pipeline) -> np.ndarray:
    """(3, H, W) pipeline output → (H, W, 3) floats in [0, 1] using the pipeline's own mean/std."""
    x = x.detach().float().cpu()
    x = denormalize(x, pipeline.mean, pipeline.std) if pipeline.normalized else x.clamp(0, 1)
    return x.permute(1, 2, 0).numpy()


def mask_overlay(image: np.ndarray, mask: torch.Tensor, alpha: float = 0.6) -> np.ndarray:
    """Grey out masked patches (mask at patch resolution, 1 = masked) and keep the rest."""
    h, w = image.shape[:2]
    m = mask.detach().float().cpu()[None, None]
    m = torch.nn.functional.interpolate(m, size=(h, w), mode="nearest")[0, 0].numpy()[..., None]
    grey = np.full_like(image, 0.5)
    return image * (1 - alpha * m) + grey * alpha * m


def sample_panels(sample: dict, pipeline: Pipeline) -> list[tuple[str, np.ndarray]]:
    """(title, image) panels of one sample: every view with its size; for masked pipelines the
    view and the view with the mask overlaid (masked ratio in the title)."""
    views = sample["views"] if "views" in sample else [sample["image"]]
    names = [v.name for v in pipeline.views]
    panels = []
    for name, v in zip(names, views):
        panels.append((f"{name} {tuple(v.shape[-2:])[0]}×{tuple(v.shape[-2:])[1]}", to_display(v, pipeline)))
    if "mask" in sample:
        mask = sample["mask"]
        ratio = float(mask.float().mean())
        panels.append(
            (f"mask {mask.shape[-2]}×{mask.shape[-1]} ({ratio:.0%} masked)", mask_overlay(panels[0][1], mask))
        )
    return panels


def sample_figure(sample: dict, pipeline: Pipeline, title: str) -> Figure:
    panels = sample_panels(sample, pipeline)
    fig = new_figure(2.2 * len(panels), 2.6)
    for i, (name, img) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(img, interpolation="nearest")
        ax.set_title(plain(name), fontsize=8)
        ax.axis("off")
    fig.suptitle(plain(title), fontsize=9)
    return fig


def grid_figure(samples: Sequence[tuple[str, dict]], pipeline: Pipeline, title: str) -> Figure:
    """All samples, each a block of its panels (views, mask) with the sample's label (index and
    class) over its first panel and each panel's view and size over it; as many blocks side by
    side as make the grid closest to square (one block per row was a strip)."""
    blocks = [(t, sample_panels(s, pipeline)) for t, s in samples]
    per = max((len(p) for _, p in blocks), default=1)
    cols = block_columns(len(blocks), per)
    rows = max(1, math.ceil(len(blocks) / cols))
    fig = new_figure(1.9 * per * cols + 0.2, 2.25 * rows + 0.5)
    axes = fig.subplots(rows, per * cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for b, (label, panels) in enumerate(blocks):
        r, c = divmod(b, cols)
        for j, (name, img) in enumerate(panels):
            ax = axes[r, c * per + j]
            ax.imshow(img, interpolation="nearest")
            ax.set_title(plain(name), fontsize=7.5)
            if j == 0:  # the sample: above its block, left-aligned, bold
                ax.text(0.0, 1.2, plain(wrap_label(label, 14 * len(panels))), transform=ax.transAxes,
                        ha="left", va="bottom", fontsize=8, fontweight="bold")
    fig.suptitle(plain(title), fontsize=9, y=1.0 + 0.35 / fig.get_figheight())  # above the labels
    return fig
