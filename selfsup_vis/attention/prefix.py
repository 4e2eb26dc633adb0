"""Attention of models that keep prefix tokens apart (cls, registers, storage tokens):
released SSL ViTs (models/pretrained_vit.py) expose ``attention_probs`` computed explicitly
from each block's modules (RoPE included, whatever timm's fused setting) and the patch grid of
the actual input; registers stay in the token graph (rollout multiplies full matrices) but
never enter a displayed patch grid (the CLS row is read from ``num_prefix_tokens`` on).

Also the DINO paper's per-head maps: each head's CLS attention thresholded to keep 60 % of its
mass (facebookresearch/dino ``visualize_attention.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn


def is_prefix_aware(model: nn.Module) -> bool:
    return callable(getattr(model, "attention_probs", None)) and hasattr(model, "num_prefix_tokens")


def check_prefix_model(model: nn.Module, block: int | None) -> None:
    name = getattr(model, "model_name", type(model).__name__)
    if not getattr(model, "class_token", True):
        raise ValueError(f"cls_attention / rollout need a CLS token; {name} has none "
                         f"(I-JEPA): use feature_norm or a CAM method")
    depth = int(model.depth)
    if block is not None and not -depth <= block < depth:
        raise ValueError(f"task.block={block}: {name} has blocks 0..{depth - 1} (negative counts from the end)")


@torch.no_grad()
def prefix_attention(model: nn.Module, images: torch.Tensor, blocks: Sequence[int] | None = None
                     ) -> tuple[dict[int, torch.Tensor], tuple[int, int], int]:
    """Probabilities (B, heads, T, T) per block (default all), the (h, w) patch grid of these
    images and the number of prefix tokens before the patches."""
    depth = int(model.depth)
    wanted = list(range(depth)) if blocks is None else [b % depth for b in blocks]
    probs, grid = model.attention_probs(images, wanted)
    return {i: p.float() for i, p in probs.items()}, tuple(grid), int(model.num_prefix_tokens)


def mass_threshold(maps: torch.Tensor, keep: float = 0.6) -> torch.Tensor:
    """(B, heads, h, w) attention (each head summing to one over the patches) -> bool masks
    keeping, per head, the largest patches whose cumulative mass reaches ``keep`` (DINO:
    ``cumval > 1 - threshold`` over the ascending sort)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"mass threshold must be in (0, 1], got {keep}")
    b, h = maps.shape[:2]
    flat = maps.reshape(b, h, -1)
    flat = flat / flat.sum(-1, keepdim=True).clamp_min(1e-12)
    val, idx = torch.sort(flat, dim=-1)
    cum = torch.cumsum(val, dim=-1)
    th = cum > (1 - keep)
    out = torch.zeros_like(th)
    out.scatter_(-1, idx, th)
    return out.reshape(maps.shape)


def head_overlay_figure(image: np.ndarray, masks: np.ndarray, title: str, provenance: str | None = None
                        ) -> Figure:
    """One image with every head's thresholded map in its own colour (the DINO figure).
    ``image`` (H, W, 3) in 0..1, ``masks`` (heads, H, W) bool at image resolution."""
    heads = masks.shape[0]
    colours = colormaps["tab10" if heads <= 10 else "tab20"](np.arange(heads) % (10 if heads <= 10 else 20))[:, :3]
    over = image.astype(np.float32).copy()
    for k in range(heads):
        m = masks[k].astype(bool)
        over[m] = 0.5 * over[m] + 0.5 * colours[k]
    h, w = image.shape[:2]
    fig = Figure(figsize=(4.0, 4.0 * h / w + 0.9))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(over.clip(0, 1))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    handles = [Patch(color=colours[k], label=f"head {k}") for k in range(heads)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(heads, 6),
              fontsize=6, frameon=False)
    if provenance:
        fig.text(0.01, 0.01, provenance, fontsize=5, va="bottom")
    return fig
