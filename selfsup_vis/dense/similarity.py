"""Patch similarity and matching: cosine-similarity maps from query patches (the DINOv3 README
figure) and mutual nearest neighbours between the patch sets of two images (DINOv2 Fig. 10)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def query_patch(pixel: Sequence[float], image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) grid cell under input pixel (y, x); outside the image is refused."""
    y, x = float(pixel[0]), float(pixel[1])
    H, W = image_size
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"task.queries: pixel (y={y:g}, x={x:g}) is outside the {H}x{W} input image")
    return int(y * grid[0] / H), int(x * grid[1] / W)


def auto_query(foreground: torch.Tensor) -> tuple[int, int]:
    """A query chosen without the user: the foreground cell (h, w bool) nearest the foreground's
    centroid, else the grid's centre."""
    h, w = foreground.shape
    idx = foreground.nonzero().double()
    if idx.numel() == 0:
        return h // 2, w // 2
    d = (idx - idx.mean(0)).pow(2).sum(1)
    r, c = idx[int(d.argmin())].long().tolist()
    return int(r), int(c)


def similarity_maps(query: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of (C,) or (q, C) query features with every patch of (n, h, w, C)
    grids -> (n, h, w) or (q, n, h, w)."""
    q = F.normalize(query.double(), dim=-1)
    g = F.normalize(grids.double(), dim=-1)
    if q.dim() == 1:
        return (g @ q).float()
    return torch.einsum("qc,nhwc->qnhw", q, g).float()


@dataclass
class Matches:
    """Mutual nearest neighbours a[i] <-> b[j] by cosine similarity, best first."""

    a: torch.Tensor  # (m,) flat patch indices in image a
    b: torch.Tensor  # (m,) in image b
    similarity: torch.Tensor  # (m,)
    num_mutual: int  # all mutual pairs (before top-k)


def mutual_matches(a: torch.Tensor, b: torch.Tensor, top_k: int | None = None) -> Matches:
    """Mutual nearest neighbours between (Na, C) and (Nb, C) patch features; the ``top_k`` most
    similar of them (all when None). Swapping a and b swaps the pairs (it is symmetric)."""
    sim = F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).T
    nn_ab = sim.argmax(1)  # each a patch's nearest b patch
    nn_ba = sim.argmax(0)
    ia = torch.arange(a.shape[0])
    mutual = nn_ba[nn_ab] == ia
    ia, ib = ia[mutual], nn_ab[mutual]
    s = sim[ia, ib]
    order = torch.argsort(s, descending=True, stable=True)
    if top_k is not None:
        order = order[: int(top_k)]
    return Matches(ia[order], ib[order], s[order].float(), int(mutual.sum()))
