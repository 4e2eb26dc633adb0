"""Figures of what a pipeline produces: views side by side with their sizes, masks overlaid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from selfsup_vis.data.transforms import Pipeline, denormalize
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
    """All samples, one row each, all panels of a sample in its row."""
    rows = [(t, sample_panels(s, pipeline)) for t, s in samples]
    ncols = max(len(p) for _, p in rows)
    fig = new_figure(1.9 * ncols, 1.9 * len(rows) + 0.4)
    for r, (row_title, panels) in enumerate(rows):
        for c in range(ncols):
            ax = fig.add_subplot(len(rows), ncols, r * ncols + c + 1)
            ax.axis("off")
            if c < len(panels):
                ax.imshow(panels[c][1], interpolation="nearest")
                ax.set_title(plain(panels[c][0]) if r == 0 else "", fontsize=7)
            if c == 0:
                ax.text(-0.05, 0.5, plain(row_title), transform=ax.transAxes, ha="right", va="center", fontsize=6)
    fig.suptitle(plain(title), fontsize=9)
    return fig
