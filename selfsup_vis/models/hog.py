"""HOG target of MaskFeat, bit-for-bit the computation of mmpretrain's ``HOGGenerator``. (HOG is
drawn by one renderer only: ``selfsup_vis.reconstruction.plots.draw_hog``.)"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel(size: int, std: float) -> torch.Tensor:
    n = torch.arange(0, size).float()
    n -= n.mean()
    n /= std
    w = torch.exp(-0.5 * n**2)
    k = w[:, None] * w[None, :]
    return k / k.sum()


class HOGGenerator(nn.Module):
    """Per-RGB-channel HOG: reflect-padded Sobel, ``atan2(gx, gy)`` binned into ``nbins``
    over pi, magnitudes weighted by a tiled Gaussian window, summed over ``pool``x``pool``
    cells, L2-normalised over bins, then grouped per ViT patch.

    ``tokens_per_side`` generalises mmpretrain's hard-coded 14 (224 px / patch 16)."""

    def __init__(self, nbins: int = 9, pool: int = 8, gaussian_window: int = 16,
                 tokens_per_side: int = 14) -> None:
        super().__init__()
        self.nbins, self.pool, self.gaussian_window = nbins, pool, gaussian_window
        self.tokens_per_side = tokens_per_side
        wx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        self.register_buffer("weight_x", wx.contiguous())
        self.register_buffer("weight_y", wx.transpose(2, 3).contiguous())
        if gaussian_window:
            self.register_buffer("gaussian_kernel", gaussian_kernel(gaussian_window, gaussian_window // 2))

    def out_dim(self, patch_size: int) -> int:
        return 3 * self.nbins * (patch_size // self.pool) ** 2

    @torch.no_grad()
    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> per-cell histograms (B, 3, nbins, H/pool, W/pool)."""
        x = F.pad(x, pad=(1, 1, 1, 1), mode="reflect")
        gx = F.conv2d(x, self.weight_x, bias=None, stride=1, padding=0, groups=3)
        gy = F.conv2d(x, self.weight_y, bias=None, stride=1, padding=0, groups=3)
        norm = torch.stack([gx, gy], dim=-1).norm(dim=-1)
        phase = torch.atan2(gx, gy) / math.pi * self.nbins
        b, c, h, w = norm.shape
        out = torch.zeros((b, c, self.nbins, h, w), dtype=torch.float, device=x.device)
        phase = phase.view(b, c, 1, h, w)
        norm = norm.view(b, c, 1, h, w)
        if self.gaussian_window:
            if h != self.gaussian_window:
                if h % self.gaussian_window:
                    raise ValueError(f"HOG: image height {h} is not a multiple of the Gaussian "
                                     f"window {self.gaussian_window}")
                rep = h // self.gaussian_window
                kern = self.gaussian_kernel.repeat([rep, rep])
            else:
                kern = self.gaussian_kernel
            norm = norm * kern
        out.scatter_add_(2, phase.floor().long() % self.nbins, norm)
        out = out.unfold(3, self.pool, self.pool).unfold(4, self.pool, self.pool).sum(dim=[-1, -2])
        return F.normalize(out, p=2, dim=2)

    def tokens(self, cells: torch.Tensor) -> torch.Tensor:
        """Cells -> (B, L, 3*nbins*u*u), last dim ordered ((c*nbins + bin), dy, dx)."""
        feat = cells.flatten(1, 2)
        u = feat.shape[-1] // self.tokens_per_side
        feat = feat.permute(0, 2, 3, 1).unfold(1, u, u).unfold(2, u, u)
        return feat.flatten(1, 2).flatten(2)

    def untokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`tokens`: (B, L, 3*nbins*u*u) -> (B, 3, nbins, H/pool, W/pool)."""
        b, L, d = tokens.shape
        t = self.tokens_per_side
        u = int(round((d // (3 * self.nbins)) ** 0.5))
        x = tokens.view(b, t, t, 3 * self.nbins, u, u).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, 3, self.nbins, t * u, t * u)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.cells(x))
