"""Typed schemas of the ``model`` config group (conf/model/*.yaml pull them in with
``defaults: [/schema/model/<kind>@_here_, _self_]``), so a misspelt model key fails at compose
time. Field names are the keyword arguments of the LightningModule named by ``_target_``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class OptimConfig:
    """AdamW + linear warmup (fraction of all steps) + cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0


@dataclass
class ModelConfig:
    _target_: str = "???"
    name: str = "???"
    img_size: int = 224
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    checkpoint: str | None = None  # path or URL (cached in $SELFSUP_VIS_CACHE)
    pipeline: str = "eval"  # mocov2 | multicrop | mae | simmim | maskfeat | eval
    strict: bool = True  # unexpected / mis-shaped / missing encoder tensors are errors
    pooling: str = "cls"  # default pooling of ViT token layers: cls | mean | cls+mean | gap
    predict_layers: list[str] | None = None  # layers returned by predict_step
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class MAEConfig(ModelConfig):
    _target_: str = "selfsup_vis.models.mae.MAE"
    pipeline: str = "mae"
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    norm_pix: bool = True
    drop_path_rate: float = 0.0


@dataclass
class SimMIMConfig(ModelConfig):
    _target_: str = "selfsup_vis.models.simmim.SimMIM"
    pipeline: str = "simmim"
    img_size: int = 192
    patch_size: int = 4
    embed_dim: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 6
    mlp_ratio: float = 4.0
    pad_small_map: bool = False
    encoder_stride: int = 32
    mask_patch_size: int = 32
    mask_ratio: float = 0.6
    drop_path_rate: float = 0.0


@dataclass
class MaskFeatConfig(ModelConfig):
    _target_: str = "selfsup_vis.models.maskfeat.MaskFeat"
    pipeline: str = "maskfeat"
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    hog_nbins: int = 9
    hog_pool: int = 8
    hog_gaussian_window: int = 16
    num_masking_patches: int | None = None  # default 40 % of the patches (78 of 196)
    min_num_patches: int = 15
    drop_path_rate: float = 0.0


@dataclass
class MoCoV2Config(ModelConfig):
    _target_: str = "selfsup_vis.models.moco.MoCoV2"
    pipeline: str = "mocov2"
    depth: int = 50
    stem_channels: int = 64
    base_channels: int = 64
    layers: list[int] | None = None  # blocks per stage (default from depth)
    neck_hidden: int = 2048
    feat_dim: int = 128
    queue_len: int = 65536
    momentum: float = 0.001  # EMA weight of the online model (mmpretrain convention)
    temperature: float = 0.2
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=0.03, weight_decay=1e-4, betas=[0.9, 0.999], warmup_ratio=0.0))


@dataclass
class MMClassifierConfig(ModelConfig):
    """mmpretrain ImageClassifier: ``backbone`` resnet | vit | swin, ``arch`` its kwargs
    (see selfsup_vis.models.backbones.build_*), ``neck`` gap | none | cls_bn,
    ``head`` linear (head.fc) | vit (head.layers.head [+ pre_logits when hidden_dim])."""

    _target_: str = "selfsup_vis.models.classifier.MMClassifier"
    backbone: str = "resnet"
    arch: dict[str, Any] = field(default_factory=dict)  # merged with the yaml's dict
    neck: str = "gap"
    head: str = "linear"
    hidden_dim: int | None = None
    num_classes: int = 1000


@dataclass
class TimmClassifierConfig(ModelConfig):
    _target_: str = "selfsup_vis.models.classifier.TimmClassifier"
    model_name: str | None = None  # timm model name; default: ``name``
    pretrained: bool = False  # True uses timm's own download / HF cache
    num_classes: int = 1000
    model_kwargs: dict[str, Any] = field(default_factory=dict)


MODEL_SCHEMAS = {"mae": MAEConfig, "simmim": SimMIMConfig, "maskfeat": MaskFeatConfig,
                 "mocov2": MoCoV2Config, "mmcls": MMClassifierConfig, "timm": TimmClassifierConfig}


def register_model_schemas() -> None:
    cs = ConfigStore.instance()
    for name, node in MODEL_SCHEMAS.items():
        cs.store(group="schema/model", name=name, node=node)
