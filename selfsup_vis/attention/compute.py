"""One entry point for every map: ``compute_maps(model, images, spec)`` -> maps at image
resolution, one panel per head / target, shared by ``task=attention`` and the
``AttentionSnapshot`` callback.

Panels: ``cls_attention`` gives one per head plus their mean (the scored one); ``rollout``,
class-agnostic maps and CAMs for one target give one; CAMs for ``cue-conflict`` targets give the
shape and the texture category side by side (the shape one is scored: the mask is the shape).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_vis.attention.cam import (
    CAM_CLASSES,
    CLASS_AGNOSTIC,
    CategoryTarget,
    compute_cam,
    feature_norm,
)
from selfsup_vis.attention.layers import (
    Network,
    default_cam_layer,
    find_network,
    resolve_layer,
)
from selfsup_vis.attention.prefix import check_prefix_model, is_prefix_aware, prefix_attention
from selfsup_vis.attention.vit import attention_probs, cls_attention, rollout
from selfsup_vis.config.attention import AttentionMethod
from selfsup_vis.models.base import SSLModule
from selfsup_vis.models.classifier import MMClassifier, TimmClassifier

ATTENTION_METHODS = frozenset({"cls_attention", "rollout"})
CUE_CONFLICT = "cue-conflict"


@dataclass
class MapSpec:
    """What to compute (the task's knobs that matter for a map)."""

    method: str = "cls_attention"
    layer: str | None = None  # CAM / feature_norm layer (None: the default for the network)
    block: int | None = None  # cls_attention block (None: the last)
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    aug_smooth: bool = False
    eigen_smooth: bool = False


@dataclass
class Target:
    """One panel's class target for every image of a batch: a key ("prediction", "shape",
    "class 3") and per image a display label and the logit indices it scores."""

    key: str
    labels: list[str]
    indices: list[Sequence[int]]


@dataclass
class MapResult:
    """Maps (B, K, H, W) at image resolution (float32; attention: probabilities bilinearly
    upsampled; CAMs: grad-cam's per-image [0, 1] scale), the grid maps before upsampling for
    attention methods, panel keys (K), per image per panel labels, and the scored panel."""

    maps: np.ndarray
    keys: list[str]
    labels: list[list[str]]
    layer: str
    scored: int = -1
    grid_maps: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_classifier(model: nn.Module) -> bool:
    """Whether ``model(images)`` returns class logits (our classifiers, or a plain module that
    is none of our self-supervised models)."""
    return isinstance(model, MMClassifier | TimmClassifier) or not isinstance(model, SSLModule)


def check_spec(model: nn.Module, spec: MapSpec) -> Network:
    """Refuse, before any work, a method the model cannot give or a layer it does not have;
    messages list the valid choices."""
    valid = [m.value for m in AttentionMethod]
    if spec.method not in valid:
        raise ValueError(f"unknown attention method {spec.method!r}; valid: {', '.join(valid)}")
    net = find_network(model)
    name = getattr(model, "model_name", type(model).__name__)
    if spec.method in ATTENTION_METHODS and is_prefix_aware(model):  # registers / storage / RoPE
        check_prefix_model(model, spec.block)
    elif spec.method in ATTENTION_METHODS:
        if net.kind != "vit":
            usable = ", ".join(sorted(CLASS_AGNOSTIC) + (sorted(set(CAM_CLASSES) - CLASS_AGNOSTIC)
                                                         if is_classifier(model) else []))
            raise ValueError(f"method {spec.method} needs a ViT with a CLS token; {name} is a "
                             f"{type(net.module).__name__} ({net.kind}). Use one of: {usable}")
        depth = len(net.module.blocks)
        if spec.block is not None and not -depth <= spec.block < depth:
            raise ValueError(f"task.block={spec.block}: {name} has blocks 0..{depth - 1} "
                             f"(negative counts from the end)")
    else:
        if spec.method not in CLASS_AGNOSTIC and not is_classifier(model):
            raise ValueError(f"method {spec.method} needs class logits, but {name} "
                             f"({type(model).__name__}) is a backbone without a classification head; "
                             f"use a class-agnostic method: {', '.join(sorted(CLASS_AGNOSTIC))}"
                             + (", or cls_attention / rollout" if net.kind == "vit" else ""))
        resolve_layer(net, spec.layer or default_cam_layer(net, spec.method not in CLASS_AGNOSTIC))
    return net


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) -> (B, K, H, W) bilinear (align_corners=False)."""
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def _attention(model: nn.Module, net: Network, images: torch.Tensor, spec: MapSpec,
               autocast: Callable[[], Any] | None) -> MapResult:
    grid = tuple(net.module.patch_embed.grid_size)
    depth = len(net.module.blocks)
    n_prefix = net.num_prefix_tokens
    ctx = autocast() if autocast is not None else torch.autocast("cpu", enabled=False)
    if spec.method == "cls_attention":
        block = (spec.block if spec.block is not None else depth - 1) % depth
        with ctx:
            if is_prefix_aware(model):
                store, grid, n_prefix = prefix_attention(model, images, [block])
                probs = store[block]
            else:
                probs = attention_probs(net, images, [block])[block]
        heads = cls_attention(probs, n_prefix, grid)
        low = torch.cat([heads, heads.mean(1, keepdim=True)], 1)
        keys = [f"head{h}" for h in range(heads.shape[1])] + ["mean"]
        layer = f"block{block}"
    else:
        with ctx:
            if is_prefix_aware(model):
                store, grid, n_prefix = prefix_attention(model, images)
            else:
                store = attention_probs(net, images)
        low = rollout([store[i] for i in range(depth)], n_prefix, grid,
                      spec.head_fusion, spec.discard_ratio).unsqueeze(1)
        keys = ["rollout"]
        layer = f"block0-{depth - 1} ({spec.head_fusion}, discard {spec.discard_ratio:g})"
    maps = upsample(low, images.shape[-2:])
    labels = [list(keys) for _ in range(images.shape[0])]
    return MapResult(maps.cpu().numpy(), keys, labels, layer, len(keys) - 1, low.cpu().numpy())


def compute_maps(model: nn.Module, images: torch.Tensor, spec: MapSpec,
                 targets: Sequence[Target] | None = None,
                 autocast: Callable[[], Any] | None = None) -> MapResult:
    """The maps of ``spec.method`` for a batch of model-normalised ``images`` (B, 3, H, W) on
    the model's device. ``targets``: class panels for gradient CAMs (None: the prediction)."""
    net = check_spec(model, spec)
    if spec.method in ATTENTION_METHODS:
        return _attention(model, net, images, spec, autocast)
    B = images.shape[0]
    agnostic = spec.method in CLASS_AGNOSTIC
    layer = spec.layer or default_cam_layer(net, not agnostic)
    if spec.method == "feature_norm":
        low = feature_norm(model, net, images, layer).unsqueeze(1)
        maps = upsample(low, images.shape[-2:]).cpu().numpy()
        return MapResult(maps, ["feature_norm"], [["feature norm"]] * B, layer, 0, low.cpu().numpy())
    if agnostic:
        out = compute_cam(model, net, images, spec.method, layer, None, spec.aug_smooth,
                          spec.eigen_smooth, autocast)
        return MapResult(out[:, None], [spec.method], [[spec.method]] * B, layer, 0)
    if targets is None:
        targets = [predicted_target(model, images)]
    panels, labels = [], [[] for _ in range(B)]
    for t in targets:
        cams = compute_cam(model, net, images, spec.method, layer, [CategoryTarget(ix) for ix in t.indices],
                           spec.aug_smooth, spec.eigen_smooth, autocast)
        panels.append(cams)
        for i in range(B):
            labels[i].append(f"{t.key}: {t.labels[i]}")
    maps = np.stack(panels, axis=1)
    return MapResult(maps, [t.key for t in targets], labels, layer, 0)


@torch.no_grad()
def predicted_target(model: nn.Module, images: torch.Tensor, class_names: Sequence[str] | None = None
                     ) -> Target:
    """The prediction of each image as a target (display: its class name when known)."""
    pred = model(images).argmax(-1).tolist()
    return Target("prediction", [class_label(p, class_names) for p in pred], [[p] for p in pred])


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[index]) if class_names is not None and 0 <= index < len(class_names) else f"class {index}"


def resolve_targets(spec: Any, model: nn.Module, images: torch.Tensor, class_names: Sequence[str] | None,
                    shape_labels: Sequence[int] | None = None, texture_labels: Sequence[int] | None = None,
                    category_indices: dict[str, Sequence[int]] | None = None) -> list[Target]:
    """``task.target_category`` -> panels. None: the prediction; an int or a class name: that
    class; ``cue-conflict``: the shape and the texture category of each image.

    ``class_names`` name the model's outputs; ``category_indices`` (a cue-conflict category's
    ImageNet indices) is used instead for 1000-way models scored on the 16 categories."""
    B = images.shape[0]
    if spec is None:
        return [predicted_target(model, images, class_names)]
    if str(spec) == CUE_CONFLICT:
        if shape_labels is None or texture_labels is None:
            raise ValueError("task.target_category=cue-conflict needs cue-conflict images (dataset=cue_conflict "
                             "or the synthetic conflict split: task.split=conflict) with shape and texture labels")
        return [_category_target("shape", shape_labels, class_names, category_indices),
                _category_target("texture", texture_labels, class_names, category_indices)]
    if isinstance(spec, int) or str(spec).lstrip("-").isdigit():
        k = int(spec)
        return [Target(f"class {k}", [class_label(k, class_names)] * B, [[k]] * B)]
    name = str(spec)
    if category_indices is not None and name in category_indices:
        return [Target(name, [name] * B, [list(category_indices[name])] * B)]
    if class_names is not None and name in class_names:
        k = list(class_names).index(name)
        return [Target(name, [name] * B, [[k]] * B)]
    known = list(category_indices or []) or list(class_names or [])
    raise ValueError(f"task.target_category={name!r} is not a class of this model/dataset; valid: an index, "
                     f"null (the prediction), {CUE_CONFLICT}" + (f", or one of {', '.join(known)}" if known else ""))


def _category_target(key: str, labels: Sequence[int], class_names: Sequence[str] | None,
                     category_indices: dict[str, Sequence[int]] | None) -> Target:
    names = [class_label(int(k), class_names) for k in labels]
    if category_indices is not None:
        return Target(key, names, [list(category_indices[n]) for n in names])
    return Target(key, names, [[int(k)] for k in labels])
