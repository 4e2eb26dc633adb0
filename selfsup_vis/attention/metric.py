"""Is the map on the object? The pointing game (Zhang et al., ECCV 2016) and the energy inside
the object mask, as pure functions and a torchmetrics ``Metric`` whose states are sums (so a
DDP reduction adds the ranks' counts exactly)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


def _check(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if maps.dim() != 3 or masks.shape != maps.shape:
        raise ValueError(f"pointing game: maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must "
                         "both be (B, H, W)")
    return maps.float(), masks.bool()


def dilate(masks: Tensor, tolerance: int) -> Tensor:
    """Masks grown by ``tolerance`` pixels (a square neighbourhood)."""
    if tolerance <= 0:
        return masks.bool()
    k = 2 * int(tolerance) + 1
    return F.max_pool2d(masks.float().unsqueeze(1), k, stride=1, padding=int(tolerance)).squeeze(1) > 0


def pointing_hits(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """(B,) bool: the map's maximum lies inside the (dilated) mask. Ties: a hit when any of
    the maximal pixels is inside; a flat map (max == min: it points nowhere) is a miss."""
    maps, masks = _check(maps, masks)
    flat = maps.flatten(1)
    top = flat.amax(1)
    peak = maps >= top.view(-1, 1, 1)
    return (peak & dilate(masks, tolerance)).flatten(1).any(1) & (top > flat.amin(1))


def energy_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """(B,) fraction of the map's positive mass inside the mask (NaN for an all-zero map);
    a uniform map scores exactly the mask's area fraction."""
    maps, masks = _check(maps, masks)
    pos = maps.clamp_min(0).flatten(1)
    total = pos.sum(1)
    inside = (pos * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def area_fraction(masks: Tensor) -> Tensor:
    """(B,) fraction of the image the mask covers (what a uniform map's energy would be)."""
    return masks.bool().flatten(1).float().mean(1)


class PointingGame(Metric):
    """Accumulates pointing-game hits, energy inside the mask and the mask's area fraction
    over images; ``compute`` gives their means (``energy_inside`` over maps with mass)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tolerance: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tolerance = int(tolerance)
        for name in ("hits", "count", "energy", "energy_count", "area"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, maps: Tensor, masks: Tensor) -> None:
        hits = pointing_hits(maps, masks, self.tolerance)
        energy = energy_inside(maps, masks)
        ok = ~torch.isnan(energy)
        self.hits += hits.double().sum()
        self.count += hits.numel()
        self.energy += energy[ok].double().sum()
        self.energy_count += ok.double().sum()
        self.area += area_fraction(masks).double().sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        return {
            "pointing_accuracy": self.hits / n,
            "energy_inside": self.energy / self.energy_count.clamp_min(1),
            "area_fraction": self.area / n,
            "num_images": self.count,
        }
