"""Attention probabilities computed explicitly from a block's own modules.

Hooks on a timm block see nothing under fused attention (``F.scaled_dot_product_attention``
never materialises the probabilities: vit-explain issue 23, dinov2 issues 90/177), and flipping
``fused_attn`` changes the code path being inspected. Instead, given the block's attention input
(``norm1(x)``), this recomputes q and k with the block's own projections (fused ``qkv`` with or
without the separate q/k/v biases of ``Eva``, or separate ``q_proj``/``k_proj``), its q/k norms
and RoPE on the patch tokens only, and returns ``softmax(q kᵀ · scale)``: the quantity the
references' explicit attention returns, whatever timm's fused setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import apply_rot_embed_cat
from torch import nn


def _qk(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, _ = x.shape
    heads = attn.num_heads
    if getattr(attn, "qkv", None) is not None:
        bias = attn.qkv.bias
        if getattr(attn, "q_bias", None) is not None:  # Eva: separate q / (zero) k / v biases
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
    else:
        q = attn.q_proj(x).reshape(b, n, heads, -1).transpose(1, 2)
        k = attn.k_proj(x).reshape(b, n, heads, -1).transpose(1, 2)
    return attn.q_norm(q), attn.k_norm(k)


def explicit_attention_probs(attn: nn.Module, x: torch.Tensor, rope: torch.Tensor | None = None
                             ) -> torch.Tensor:
    """(B, heads, N, N) softmax((q · kᵀ) · scale) of timm attention module ``attn`` for its
    input ``x`` (B, N, C) (the block's ``norm1`` output); ``rope`` (h*w, 2·head_dim) rotates
    q and k of the tokens after ``attn.num_prefix_tokens`` (DINOv3: cls and storage tokens
    are not rotated)."""
    q, k = _qk(attn, x)
    if rope is not None:
        npt = int(getattr(attn, "num_prefix_tokens", 0))
        half = bool(getattr(attn, "rotate_half", False))
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2)
    scale = float(getattr(attn, "scale", q.shape[-1] ** -0.5))
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
