"""Class activation maps through the ``grad-cam`` package (pytorch-grad-cam), and the feature
norm map, for any of our models.

Grad-CAM-family methods need class logits (``model(images)`` -> (B, classes)); class-agnostic
ones (EigenCAM, the feature norm) only run the network, so every self-supervised backbone gets
a map. ``pytorch_grad_cam`` (and OpenCV under it) is imported when a CAM is first computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from selfsup_vis.attention.layers import Network, reshape_transform, resolve_layer

#: our method names -> pytorch_grad_cam class names
CAM_CLASSES = {
    "gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM", "layercam": "LayerCAM",
    "scorecam": "ScoreCAM", "hirescam": "HiResCAM",
}  # fmt: skip
CLASS_AGNOSTIC = frozenset({"eigencam", "feature_norm"})


class _RunNetwork(nn.Module):
    """What grad-cam calls for a class-agnostic map of a model without a head: the model's own
    feature extraction (which runs the hooked layer); its output is not used as a target."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if hasattr(self.inner, "extract_features"):
            layer = self.inner.available_layers()[-1]
            return self.inner.extract_features(images, [layer])[layer].float()
        return self.inner(images)


class CategoryTarget:
    """A grad-cam target: one logit, or the mean softmax probability over a set of logits
    (a cue-conflict category's ImageNet indices, as model-vs-human decides)."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = [int(i) for i in indices]

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if len(self.indices) == 1:
            return output[..., self.indices[0]]
        return torch.softmax(output.float(), dim=-1)[..., self.indices].mean(-1)


def cam_module(model: nn.Module, method: str) -> nn.Module:
    """The module grad-cam runs: the classifier itself, or the feature extractor for
    class-agnostic maps."""
    return _RunNetwork(model) if method in CLASS_AGNOSTIC else model


def compute_cam(model: nn.Module, net: Network, images: torch.Tensor, method: str, layer: str,
                targets: Sequence[CategoryTarget] | None, aug_smooth: bool = False,
                eigen_smooth: bool = False, autocast: Callable[[], Any] | None = None) -> np.ndarray:
    """(B, H, W) map in [0, 1] (grad-cam scales each map to its min/max) of ``method`` at
    ``layer`` for ``targets`` (one per image; None: class-agnostic or the prediction)."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, CAM_CLASSES[method])
    module = resolve_layer(net, layer)
    runner = cam_module(model, method)
    fold = reshape_transform(net)

    def to_nchw_float(x: torch.Tensor) -> torch.Tensor:  # grad-cam goes to numpy: no bf16
        return (fold(x) if fold is not None else x).float()

    # not ``with cam:`` -- grad-cam's __exit__ swallows IndexErrors
    cam = cls(model=runner, target_layers=[module], reshape_transform=to_nchw_float)
    try:
        if method == "scorecam":
            cam.batch_size = 64  # masked copies of the input per forward pass (grad-cam: 16)
        with autocast() if autocast is not None else nullcontext(), torch.enable_grad():
            out = cam(input_tensor=images, targets=list(targets) if targets is not None else None,
                      aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    finally:
        cam.activations_and_grads.release()
    return np.asarray(out, dtype=np.float32)


@torch.no_grad()
def feature_norm(model: nn.Module, net: Network, images: torch.Tensor, layer: str) -> torch.Tensor:
    """(B, h, w) L2 norm over channels of ``layer``'s output at each position (patch tokens
    for ViTs): where a backbone puts the most feature energy, with no class involved."""
    module = resolve_layer(net, layer)
    fold = reshape_transform(net)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    try:
        _RunNetwork(model)(images)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"layer {layer!r} did not run in the model's feature extraction")
    x = seen[0]
    x = fold(x) if fold is not None else x
    if x.dim() != 4:
        raise ValueError(f"feature_norm: layer {layer!r} gives {tuple(x.shape)}, not a spatial map")
    return x.float().norm(dim=1)
