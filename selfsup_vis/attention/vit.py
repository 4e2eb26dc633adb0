"""Attention probabilities of a timm ViT, CLS attention per head and attention rollout.

The probabilities are the model's own: fused attention (``scaled_dot_product_attention``, which
never materialises them) is switched off for the forward pass and the input of each block's
``attn.attn_drop`` -- the softmax output in timm's unfused path -- is recorded. Rows are checked
to sum to one, so a timm change that moved the softmax would fail loudly, not draw garbage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from selfsup_vis.attention.layers import Network


@contextmanager
def _recording(blocks: Sequence[nn.Module], wanted: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    store: dict[int, torch.Tensor] = {}
    handles, saved = [], []
    try:
        for i in wanted:
            attn = blocks[i].attn
            if not hasattr(attn, "attn_drop"):
                raise TypeError(f"block {i}: {type(attn).__name__} has no attn_drop; cannot record attention")
            saved.append((attn, getattr(attn, "fused_attn", None)))
            if hasattr(attn, "fused_attn"):
                attn.fused_attn = False

            def hook(_m: nn.Module, args: tuple, _out: torch.Tensor, i: int = i) -> None:
                store[i] = args[0].detach().float()

            handles.append(attn.attn_drop.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()
        for attn, fused in saved:
            if fused is not None:
                attn.fused_attn = fused


@torch.no_grad()
def attention_probs(net: Network, images: torch.Tensor, blocks: Sequence[int] | None = None
                    ) -> dict[int, torch.Tensor]:
    """(B, heads, N, N) softmax attention of each requested block (default: all) for ``images``
    (B, 3, H, W) through the ViT's ``forward_features``; keys/queries include the extra tokens."""
    if net.kind != "vit":
        raise TypeError(f"attention maps need a ViT; this model's network is a {type(net.module).__name__}")
    depth = len(net.module.blocks)
    wanted = list(range(depth)) if blocks is None else [b % depth for b in blocks]
    with _recording(net.module.blocks, wanted) as store:
        net.module.forward_features(images)
    missing = [i for i in wanted if i not in store]
    if missing:
        raise RuntimeError(f"no attention recorded for block(s) {missing}")
    for i, a in store.items():
        err = (a.sum(-1) - 1).abs().max().item()
        if err > 1e-2:
            raise RuntimeError(f"block {i}: recorded attention rows sum to 1 ± {err:.3g}, not softmax output")
    return store


def cls_attention(probs: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(B, heads, h, w): attention of the CLS query to each patch key, re-normalised over the
    patches (the raw softmax row sums to one over all keys incl. the extra tokens)."""
    row = probs[:, :, 0, num_prefix:]
    row = row / row.sum(-1, keepdim=True).clamp_min(1e-12)
    return row.reshape(probs.shape[0], probs.shape[1], *grid)


def rollout(probs: Sequence[torch.Tensor], num_prefix: int, grid: tuple[int, int],
            head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020), (B, h, w), summing to one over the patches.

    Per block: heads fused (mean / max / min), the lowest ``discard_ratio`` of the fused weights
    dropped (never the CLS->CLS weight), A' = 0.5·A + 0.5·I with rows
    re-normalised, then R = A'_L ··· A'_1; the map is R's CLS row over the patch tokens."""
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"rollout: discard_ratio must be in [0, 1), got {discard_ratio}")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"rollout: head_fusion must be one of {', '.join(fuse)}, got {head_fusion!r}")
    result: torch.Tensor | None = None
    for a in probs:
        a = fuse[head_fusion](a.double())
        B, N, _ = a.shape
        if discard_ratio > 0:  # as jacobgil/vit-explain: never the CLS->CLS weight (flat index 0)
            flat = a.reshape(B, N * N).clone()
            k = int(N * N * discard_ratio)
            if k:
                idx = flat.topk(k, dim=-1, largest=False).indices
                drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
                drop[:, 0] = False
                flat = flat.masked_fill(drop, 0.0)
            a = flat.reshape(B, N, N)
        eye = torch.eye(N, dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None, "rollout of zero blocks"
    row = result[:, 0, num_prefix:]
    row = row / row.sum(-1, keepdim=True)
    return row.reshape(row.shape[0], *grid).float()
