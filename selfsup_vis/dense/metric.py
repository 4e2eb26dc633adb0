"""Is the PCA foreground the object? Intersection over union of the foreground mask (upsampled
to image resolution) with the known object masks (the synthetic data's, as in the pointing
game), as a torchmetrics ``Metric`` whose states are sums, and the centre-blob baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(n, h, w) -> (n, H, W) bilinear (align_corners=False), as every overlay is drawn."""
    return F.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def foreground_pixels(fg: Tensor, size: tuple[int, int]) -> Tensor:
    """A grid foreground (n, h, w) bool at pixel resolution: bilinear, then >= 0.5."""
    return upsample(fg.float(), size) >= 0.5


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """(n,) IoU of bool masks (n, H, W); 1 where both are empty."""
    if pred.shape != target.shape:
        raise ValueError(f"IoU: masks {tuple(pred.shape)} and {tuple(target.shape)} differ")
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter, union = (p & t).sum(1).double(), (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def centre_blob(masks: Tensor) -> Tensor:
    """The know-nothing baseline: per image a centred disc of the true mask's area."""
    n, H, W = masks.shape
    yy, xx = torch.meshgrid(torch.arange(H) - (H - 1) / 2, torch.arange(W) - (W - 1) / 2, indexing="ij")
    r2 = (xx**2 + yy**2).double()
    area = masks.flatten(1).double().sum(1)
    radius2 = area / torch.pi
    return r2[None] <= radius2[:, None, None]


class ForegroundIoU(Metric):
    """Mean per-image IoU of predicted foreground masks with object masks."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        v = iou(pred, target)
        self.total += v.sum()
        self.count += v.numel()

    def compute(self) -> Tensor:
        return self.total / self.count.clamp_min(1)
