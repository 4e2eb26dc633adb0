"""Typed schema of ``task=dense`` (what each patch encodes: PCA->RGB, similarity, token norms)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import TaskConfig


class FeatureNormalisation(StrEnum):
    none = "none"  # the papers' choice
    l2 = "l2"  # each patch feature to unit norm
    standardise = "standardise"  # each dimension to unit variance (PCA of the correlation matrix)


class BasisMode(StrEnum):
    joint = "joint"  # one basis over all images: the same part gets the same colour everywhere
    per_image = "per_image"  # one basis per image (not saved for reuse)


class ForegroundSign(StrEnum):
    auto = "auto"  # the foreground is the smaller side of the PC1 threshold
    positive = "positive"  # foreground where PC1 > threshold
    negative = "negative"


@dataclass
class DenseTaskConfig(TaskConfig):
    """PCA->RGB maps with a PC1 foreground, cosine similarity from query patches, mutual
    patch matches and token norms (outliers, registers, CLS) of layers with a spatial grid;
    the foreground's IoU with the object masks where they are known (synthetic data)."""

    _target_: str = "selfsup_vis.tasks.dense.run"
    name: str = "dense"
    # an image file, a folder or a list of them; null: task.max_images samples of the dataset
    images: Any = None
    max_images: int = field(default=16, metadata={"min": 1})
    split: str | None = None  # dataset split when no images are given (default: dataset.eval_split)
    resize: str = "crop"  # task.images: crop (shorter side + center crop) | stretch
    masks_root: str | None = None  # object masks of task.images / image folders (as task=attention)
    # input size (overrides model.img_size; ViT position embeddings are resized as on checkpoint load)
    img_size: int | None = field(default=None, metadata={"min": 1})
    # layers with a spatial grid (ViT blockN / norm, Swin stageN, ResNet layerN); empty: the last one
    layers: list[str] = field(default_factory=list)
    final_norm: bool = False  # ViT blocks through the final norm (DINOv2's x_norm_patchtokens)
    normalisation: FeatureNormalisation = FeatureNormalisation.none
    basis: BasisMode = BasisMode.joint
    basis_from: str | None = None  # a pca_basis.npz or a run dir holding one: reuse, never refit
    foreground: bool = True  # PC1 threshold -> foreground, then a second PCA on foreground patches
    threshold: float | None = None  # on PC1; null: Otsu
    foreground_sign: ForegroundSign = ForegroundSign.auto
    percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])  # robust min-max per channel
    queries: list[Any] = field(default_factory=list)  # [[y, x], ...] input pixels of image 0; empty: auto
    top_k: int = field(default=20, metadata={"min": 1})  # matches drawn per image pair
    max_pairs: int = field(default=3, metadata={"min": 0})  # consecutive image pairs matched
    outlier_k: float = field(default=6.0, metadata={"gt": 0})  # outlier tokens: norm > median + k*MAD
    batch_size: int = field(default=16, metadata={"min": 1})
    device: str = "auto"  # auto (cuda when available and trainer.accelerator is not cpu) | cpu | cuda
    save_features: bool = False  # keep patches_<layer>.npy (n*h*w, C); else deleted after the run
    max_rows: int = field(default=8, metadata={"min": 1})  # images per layer figure (arrays have all)
    formats: list[str] = field(default_factory=lambda: ["png"])


def register_dense_schemas() -> None:
    ConfigStore.instance().store(group="schema/task", name="dense", node=DenseTaskConfig)
