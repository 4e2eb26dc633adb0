"""Typed schema of ``task=attention`` (where a model looks) and its method names."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import TaskConfig


class AttentionMethod(StrEnum):
    """ViT attention (no gradients), Grad-CAM family (classifiers, via ``grad-cam``) and
    class-agnostic maps (any backbone)."""

    cls_attention = "cls_attention"  # last (or task.block) block's CLS->patch attention per head
    rollout = "rollout"  # Abnar & Zuidema 2020 over all blocks
    gradcam = "gradcam"
    gradcampp = "gradcampp"  # Grad-CAM++
    xgradcam = "xgradcam"
    eigencam = "eigencam"  # class-agnostic: first principal component of the layer's activations
    eigengradcam = "eigengradcam"
    layercam = "layercam"
    scorecam = "scorecam"
    hirescam = "hirescam"
    feature_norm = "feature_norm"  # class-agnostic: L2 norm of the layer's feature at each position


class HeadFusion(StrEnum):
    mean = "mean"
    max = "max"
    min = "min"


@dataclass
class AttentionTaskConfig(TaskConfig):
    """Attention / class-activation maps of a model, scored by a pointing game where the
    object masks are known (synthetic data, or ``masks_root`` for image folders)."""

    _target_: str = "selfsup_vis.tasks.attention.run"
    name: str = "attention"
    method: AttentionMethod = AttentionMethod.cls_attention  # several: -m task.method=a,b
    # an image file, a folder or a list of them; null: task.max_images samples of the dataset
    images: Any = None
    max_images: int = 8
    split: str | None = None  # dataset split when no images are given (default: dataset.eval_split)
    resize: str = "crop"  # task.images: crop (shorter side + center crop) | stretch
    # masks of task.images / dataset=image_folder: a folder mirroring the images' relative paths
    # (same stem, any image extension; nonzero = object). null: no score unless the data has masks
    masks_root: str | None = None
    block: int | None = None  # cls_attention: the block (default: the last; negative counts back)
    # cls_attention: also the DINO figure, each head's CLS attention thresholded to keep this
    # fraction of its mass (DINO: 0.6), one colour per head; null: off
    head_threshold: float | None = None
    head_fusion: HeadFusion = HeadFusion.mean  # rollout
    discard_ratio: float = 0.0  # rollout: drop this fraction of the lowest attention weights
    # CAM / class-agnostic layers, named like the model's layers (layer4, block3, stage2, norm)
    # or as a submodule path of the backbone (blocks.3.norm1); empty: a sensible default
    target_layers: list[str] = field(default_factory=list)
    # class index or name; null: the prediction; "cue-conflict": shape and texture side by side
    target_category: Any = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    batch_size: int = 8
    device: str = "auto"  # auto (cuda when available and trainer.accelerator is not cpu) | cpu | cuda
    max_figures: int = 16  # per-image figures for the first N images (the grid and .npy have all)
    alpha: float = 0.5  # overlay opacity of the map
    colormap: str = "inferno"  # a perceptual matplotlib colormap
    tolerance: int = 0  # pointing game: a hit within this many pixels of the mask also counts
    seed: int = 0  # the random-map baseline of the pointing game
    formats: list[str] = field(default_factory=lambda: ["png"])


def register_attention_schemas() -> None:
    ConfigStore.instance().store(group="schema/task", name="attention", node=AttentionTaskConfig)
