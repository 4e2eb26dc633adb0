"""Spatial layer outputs as patch grids, with the extra tokens kept apart.

A ViT block's output is ``[cls, registers / storage tokens, patches]`` (timm's and DINOv2's
order); only the patch tokens form the grid, folded to (B, h, w, C); the CLS token and the
register tokens are returned separately so that no statistic ever mixes them in. Swin stages
and CNN stages are NCHW maps (Swin's grid follows the input's aspect ratio, so it may be
non-square). The grid a layer will have is known before anything runs, from the timm
network's ``feature_info`` reduction, so a grid-less layer or an image smaller than one patch is
refused before extraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup_vis.attention.layers import Network, find_network
from selfsup_vis.models.backbones import supports_intermediates, timm_layer_names


@dataclass
class PatchGrid:
    """One layer's spatial features: ``features`` (B, h, w, C) float32; ``cls`` (B, C) and
    ``registers`` (B, R, C) for ViTs (None where the layer has none)."""

    layer: str
    features: torch.Tensor
    cls: torch.Tensor | None = None
    registers: torch.Tensor | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[1]), int(self.features.shape[2])


def prefix_split(net: Network) -> tuple[int, int]:
    """(number of class tokens, number of register / storage tokens) in front of the patches."""
    if net.kind != "vit":
        return 0, 0
    m = net.module
    n_prefix = int(getattr(m, "num_prefix_tokens", 1))
    n_cls = 1 if getattr(m, "cls_token", None) is not None else 0
    return n_cls, n_prefix - n_cls


def _reductions(net: Network) -> dict[str, int]:
    """Our layer name -> its stride in input pixels (timm ``feature_info``); ``norm`` is the last."""
    if not supports_intermediates(net.module):
        return {}
    red = {name: int(info["reduction"]) for name, info in zip(timm_layer_names(net.module), net.module.feature_info)}
    if red and net.kind in ("vit", "swin"):
        red["norm"] = list(red.values())[-1]
    if "stem" in red and isinstance(getattr(net.module, "maxpool", None), nn.MaxPool2d):
        red["stem"] *= 2  # our stem is taken after the max-pool (mmpretrain's), timm's before it
    return red


def grid_layers(model: nn.Module) -> list[str]:
    """The model's layers (its ``available_layers``) that have a spatial grid; none for a model
    without a known network (a user's own family)."""
    try:
        net = find_network(model)
    except TypeError:
        return []
    red = _reductions(net)
    return [layer for layer in model.available_layers() if layer in red]


def expected_grids(model: nn.Module, layers: Sequence[str], size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """The (h, w) grid each layer will have for ``size`` = (H, W) images; refuses, before any
    extraction, a layer without a grid (naming those with one) and an image smaller than one
    patch (or than the layer's stride)."""
    net = find_network(model)
    red = _reductions(net)
    valid = [layer for layer in model.available_layers() if layer in red]
    pe = getattr(net.module, "patch_embed", None)
    if (net.kind == "vit" and getattr(pe, "strict_img_size", False) and not getattr(net.module, "dynamic_img_size", False)
            and pe.img_size is not None and tuple(pe.img_size) != tuple(size)):
        raise ValueError(f"{type(model).__name__}: its ViT takes {tuple(pe.img_size)} px inputs, not {tuple(size)}; "
                         "set model.img_size (timm models: model.model_kwargs.img_size, or dynamic_img_size: true)")
    out = {}
    for layer in layers:
        if layer not in red or layer not in valid:
            raise ValueError(f"task.layers: {layer!r} of {getattr(model, 'model_name', type(model).__name__)} has no "
                             f"spatial grid; layers with one: {', '.join(valid) or '(none)'}")
        r = red[layer]
        H, W = size
        if min(H, W) < r:
            raise ValueError(f"image {H}x{W} px is smaller than one patch of layer {layer!r} ({r} px); "
                             f"use a larger task.img_size")
        ceil = net.kind not in ("vit", "swin")  # padded strided convolutions round up
        out[layer] = (-(-H // r), -(-W // r)) if ceil else (H // r, W // r)
    return out


@torch.no_grad()
def patch_grids(model: nn.Module, layers: Sequence[str], images: torch.Tensor,
                final_norm: bool = False) -> dict[str, PatchGrid]:
    """Each layer's :class:`PatchGrid` for ``images`` (B, 3, H, W), from the model's own layer
    outputs; ``final_norm`` applies the ViT's final norm to block outputs (DINOv2's
    ``x_norm_patchtokens``)."""
    grids = expected_grids(model, layers, (int(images.shape[-2]), int(images.shape[-1])))
    net = find_network(model)
    n_cls, n_reg = prefix_split(net)
    norm = model.final_norm_layer() if final_norm else None
    if final_norm and norm is None:
        raise ValueError(f"task.final_norm: {type(model).__name__} has no final norm to apply")
    raw = model._layer_outputs(images, set(layers))
    out = {}
    for layer in layers:
        x = raw[layer]
        h, w = grids[layer]
        if x.dim() == 4:  # NCHW map (Swin, CNN)
            if tuple(x.shape[2:]) != (h, w):
                raise RuntimeError(f"layer {layer}: map {tuple(x.shape[2:])}, expected {(h, w)}")
            out[layer] = PatchGrid(layer, x.permute(0, 2, 3, 1).float().contiguous())
            continue
        if x.dim() != 3:
            raise ValueError(f"layer {layer}: output {tuple(x.shape)} is neither tokens nor a map")
        if norm is not None and layer.startswith("block"):
            x = norm(x)
        n_prefix = n_cls + n_reg
        if x.shape[1] - n_prefix != h * w:
            raise RuntimeError(f"layer {layer}: {x.shape[1]} tokens minus {n_prefix} prefix tokens do not fill "
                               f"the {h}x{w} grid")
        x = x.float()
        out[layer] = PatchGrid(
            layer, x[:, n_prefix:].reshape(x.shape[0], h, w, x.shape[2]).contiguous(),
            x[:, 0] if n_cls else None, x[:, n_cls:n_prefix] if n_reg else None)
    return out


def layer_dims(model: nn.Module, layers: Sequence[str]) -> dict[str, int]:
    """Each grid layer's feature dimension (timm ``feature_info`` channels), known before any
    extraction (so a saved basis of another dimension is refused at start)."""
    net = find_network(model)
    if not supports_intermediates(net.module):
        return {}
    dims = {name: int(info["num_chs"]) for name, info in zip(timm_layer_names(net.module), net.module.feature_info)}
    if dims and net.kind in ("vit", "swin"):
        dims["norm"] = list(dims.values())[-1]
    return {layer: dims[layer] for layer in layers if layer in dims}
