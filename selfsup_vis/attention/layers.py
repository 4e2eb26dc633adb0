"""Which network a model's maps come from and which of its modules a layer name means.

Our models keep their timm network under different public names (``backbone`` for MoCo and
mmpretrain classifiers, ``encoder`` for MAE / SimMIM / MaskFeat, ``model`` for timm
classifiers), so the network is found by type, not by attribute name. Layer names follow the
models' own (``layer4``, ``block3``, ``stage2``, ``norm``); any submodule path of the network
(``blocks.3.norm1``) works too, for layers our names do not cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.models.resnet import ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

NETWORK_ATTRS = ("backbone", "encoder", "model")


@dataclass
class Network:
    """A model's timm network and its kind (vit | swin | resnet | other)."""

    module: nn.Module
    kind: str
    attr: str

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.module, "num_prefix_tokens", 1)) if self.kind == "vit" else 0


def _kind(module: nn.Module) -> str:
    if isinstance(module, VisionTransformer):
        return "vit"
    if isinstance(module, SwinTransformer):
        return "swin"
    if isinstance(module, ResNet):
        return "resnet"
    return "other"


def find_network(model: nn.Module) -> Network:
    """The model's network: the first of ``backbone`` / ``encoder`` / ``model`` that is a known
    timm architecture, else the first that exists."""
    found = [(a, getattr(model, a)) for a in NETWORK_ATTRS if isinstance(getattr(model, a, None), nn.Module)]
    for attr, mod in found:
        if _kind(mod) != "other":
            return Network(mod, _kind(mod), attr)
    if found:
        return Network(found[0][1], "other", found[0][0])
    if _kind(model) != "other":
        return Network(model, _kind(model), "")
    raise TypeError(f"{type(model).__name__}: no network found (looked for {', '.join(NETWORK_ATTRS)})")


def layer_names(net: Network) -> list[str]:
    """Our names of the network's layers (what ``resolve_layer`` accepts besides paths)."""
    m = net.module
    if net.kind == "vit":
        return [f"block{i}" for i in range(len(m.blocks))] + ["norm"]
    if net.kind == "swin":
        return [f"stage{i}" for i in range(len(m.layers))] + ["norm"]
    if net.kind == "resnet":
        return ["stem", "layer1", "layer2", "layer3", "layer4"]
    return []


def default_cam_layer(net: Network, gradients: bool) -> str:
    """mmpretrain ``vis_cam``'s defaults: a ViT's last block's ``norm1`` (the class token's
    gradient does not reach the last block's patch outputs), a Swin's / ResNet's last stage."""
    if net.kind == "vit":
        return f"blocks.{len(net.module.blocks) - 1}.norm1" if gradients else f"block{len(net.module.blocks) - 1}"
    if net.kind == "swin":
        return f"stage{len(net.module.layers) - 1}"
    if net.kind == "resnet":
        return "layer4"
    raise ValueError(f"no default target layer for a {type(net.module).__name__}; set task.target_layers "
                     "to submodule paths of it")


def resolve_layer(net: Network, name: str) -> nn.Module:
    """The module behind ``name``; an unknown name lists the valid ones."""
    m = net.module
    ours = layer_names(net)
    if name in ours:
        if name == "norm":
            return m.norm
        if net.kind == "vit":
            return m.blocks[int(name[len("block"):])]
        if net.kind == "swin":
            return m.layers[int(name[len("stage"):])]
        if name == "stem":
            return m.maxpool
        return getattr(m, name)
    modules = dict(m.named_modules())
    if name and name in modules:
        return modules[name]
    examples = [n for n in modules if n.count(".") <= 2 and n][-4:]
    raise ValueError(f"unknown target layer {name!r} for {type(m).__name__} ({net.kind}); valid layers: "
                     f"{', '.join(ours) or '(none named)'}, or a submodule path such as "
                     f"{', '.join(examples)}")


def reshape_transform(net: Network) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Activations -> (B, C, h, w): ViT tokens without the extra (cls / register) tokens folded
    to the patch grid, Swin's NHWC permuted; ``None`` for conv nets (already NCHW)."""
    if net.kind == "vit":
        n_prefix = net.num_prefix_tokens
        grid = tuple(net.module.patch_embed.grid_size)

        def fold(x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4:
                return x
            tokens = x[:, n_prefix:, :]
            h, w = grid
            if tokens.shape[1] != h * w:
                raise ValueError(f"ViT reshape: {tokens.shape[1]} patch tokens do not fill the {h}x{w} grid")
            return tokens.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)

        return fold
    if net.kind == "swin":
        return lambda x: x.permute(0, 3, 1, 2) if x.dim() == 4 else x
    return None
