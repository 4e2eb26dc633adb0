"""Typed schemas of the ``model`` config group (conf/model/*.yaml pull them in with
``defaults: [/schema/model/<kind>@_here_, _self_]``), so a misspelt model key fails at compose
time. Field names are the keyword arguments of the LightningModule named by ``_target_``; this
file is the one source of every model default, the pre-training recipes included (the model
classes declare no defaults: ``@takes_schema(<Schema>)`` fills what a call leaves out, so a
model built without a config, e.g. from an mmpretrain config, trains with the same recipe).

A schema's ``family`` is its name in the ``schema/model`` group (``/schema/model/<family>``);
:func:`model_schemas` finds every schema (subclasses of :class:`ModelConfig`, ours and a user's
imported ones), so adding a family adds a dataclass here and nothing to a list."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import Pipeline, Pooling

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # timm.data.IMAGENET_DEFAULT_MEAN (literal: the config
IMAGENET_STD = [0.229, 0.224, 0.225]  # layer stays torch-free; a test checks they agree)


# ------------------------------------------------------------------- optimizer and schedule
@dataclass
class AdamWConfig:
    """``torch.optim.AdamW`` as a partial; ``lr`` is the base lr at ``model.lr_base_batch``."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1.0e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    weight_decay: float = 0.05


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    nesterov: bool = False


@dataclass
class SchedulerConfig:
    """:func:`selfsup_vis.models.optim.warmup_cosine` as a partial: linear warmup over
    ``warmup_epochs`` (the recipe's fraction ``warmup_epochs / recipe_epochs`` of the run when
    the run is shorter or bounded by time), then cosine to ``eta_min + eta_min_ratio * lr``."""

    _target_: str = "selfsup_vis.models.optim.warmup_cosine"
    _partial_: bool = True
    warmup_epochs: float = 0.0
    recipe_epochs: float | None = None
    warmup_start_factor: float = 1.0e-4
    eta_min: float = 0.0
    eta_min_ratio: float = 0.0


@dataclass
class ModelConfig:
    family: ClassVar[str] = ""  # name in the schema/model group; "" = not a family (a base)
    _target_: str = "???"
    name: str = "???"
    img_size: int = field(default=224, metadata={"min": 1})
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    checkpoint: str | None = None  # path or URL (cached in $SELFSUP_VIS_CACHE)
    pipeline: Pipeline = Pipeline.eval  # training pipeline (task=pretrain, browse)
    strict: bool = True  # unexpected / mis-shaped / missing encoder tensors are errors
    # run although the checkpoint lacks a part the task uses (a neck, a decoder): flagged
    # RANDOM PARTS on every figure and in summary.json instead of refused
    allow_random_parts: bool = False
    pooling: Pooling | None = None  # token layers without a suffix (None: cls; maps: gap)
    predict_layers: list[str] | None = None  # layers returned by predict_step (None: default)
    final_norm_blocks: bool = False  # ViTs: apply the final norm to blockN outputs too
    optimizer: Any = field(default_factory=AdamWConfig)
    scheduler: Any = field(default_factory=SchedulerConfig)
    lr_base_batch: int | None = None  # optimizer.lr is for this many images per step (None: absolute)
    no_weight_decay: list[str] = field(default_factory=list)  # parameter-name suffixes without decay
    weight_decay_exclude_1d: bool = True  # no decay for norms and biases
    gradient_clip_val: float | None = None  # max grad norm (trainer.gradient_clip_val overrides)


@dataclass
class MAEConfig(ModelConfig):
    family: ClassVar[str] = "mae"
    _target_: str = "selfsup_vis.models.mae.MAE"
    pipeline: Pipeline = Pipeline.mae
    # mae_vit-base-p16_8xb512-amp-coslr-300e_in1k
    optimizer: Any = field(default_factory=lambda: AdamWConfig(lr=1.5e-4, betas=[0.9, 0.95]))
    scheduler: Any = field(default_factory=lambda: SchedulerConfig(
        warmup_epochs=40, recipe_epochs=300, warmup_start_factor=1.0e-4))
    lr_base_batch: int | None = 256
    no_weight_decay: list[str] = field(default_factory=lambda: ["pos_embed", "mask_token", "cls_token"])
    patch_size: int = field(default=16, metadata={"min": 1, "divides": "img_size"})
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    mask_ratio: float = field(default=0.75, metadata={"gt": 0, "lt": 1})
    norm_pix: bool = True
    drop_path_rate: float = 0.0
    norm_eps: float = 1.0e-6  # LayerNorm eps: official / mmpretrain 1e-6, Hugging Face ViTMAE 1e-12


@dataclass
class SimMIMConfig(ModelConfig):
    family: ClassVar[str] = "simmim"
    _target_: str = "selfsup_vis.models.simmim.SimMIM"
    pipeline: Pipeline = Pipeline.simmim
    # simmim_swin-base_16xb128-amp-coslr-100e_in1k-192
    optimizer: Any = field(default_factory=lambda: AdamWConfig(lr=2.0e-4, betas=[0.9, 0.999], eps=1.0e-8))
    scheduler: Any = field(default_factory=lambda: SchedulerConfig(
        warmup_epochs=10, recipe_epochs=100, warmup_start_factor=1.0e-6 / 2.0e-4,
        eta_min_ratio=1.0e-5 / 2.0e-4))
    lr_base_batch: int | None = 512
    no_weight_decay: list[str] = field(default_factory=lambda: [
        "absolute_pos_embed", "relative_position_bias_table"])
    gradient_clip_val: float | None = 5.0
    img_size: int = field(default=192, metadata={"min": 1})
    patch_size: int = field(default=4, metadata={"min": 1, "divides": "img_size"})
    embed_dim: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 6
    mlp_ratio: float = 4.0
    pad_small_map: bool = False
    encoder_stride: int = field(default=32, metadata={"min": 1, "divides": "img_size"})
    mask_patch_size: int = field(default=32, metadata={"min": 1, "divides": "img_size"})
    mask_ratio: float = field(default=0.6, metadata={"gt": 0, "lt": 1})
    drop_path_rate: float = 0.0


@dataclass
class MaskFeatConfig(ModelConfig):
    family: ClassVar[str] = "maskfeat"
    _target_: str = "selfsup_vis.models.maskfeat.MaskFeat"
    pipeline: Pipeline = Pipeline.maskfeat
    # maskfeat_vit-base-p16_8xb256-amp-coslr-300e_in1k: lr 2e-4 x 8 at batch 2048
    optimizer: Any = field(default_factory=lambda: AdamWConfig(lr=2.0e-4 * 8, betas=[0.9, 0.999]))
    scheduler: Any = field(default_factory=lambda: SchedulerConfig(
        warmup_epochs=30, recipe_epochs=300, warmup_start_factor=1.0e-6, eta_min=1.0e-6))
    lr_base_batch: int | None = 2048
    gradient_clip_val: float | None = 0.02
    patch_size: int = field(default=16, metadata={"min": 1, "divides": "img_size"})
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
    family: ClassVar[str] = "mocov2"
    _target_: str = "selfsup_vis.models.moco.MoCoV2"
    pipeline: Pipeline = Pipeline.mocov2
    # mocov2_resnet50_8xb32-coslr-200e_in1k: SGD, weight decay on every parameter, no warmup
    optimizer: Any = field(default_factory=SGDConfig)
    scheduler: Any = field(default_factory=lambda: SchedulerConfig(recipe_epochs=200))
    lr_base_batch: int | None = 256
    weight_decay_exclude_1d: bool = False
    depth: int = 50
    stem_channels: int = 64
    base_channels: int = 64
    layers: list[int] | None = None  # blocks per stage (default from depth)
    neck_hidden: int = 2048
    feat_dim: int = 128
    queue_len: int = 65536
    momentum: float = 0.001  # EMA weight of the online model (mmpretrain convention)
    temperature: float = 0.2


@dataclass
class MMClassifierConfig(ModelConfig):
    """mmpretrain ImageClassifier: ``backbone`` resnet | vit | swin, ``arch`` its kwargs
    (see selfsup_vis.models.backbones.build_*), ``neck`` gap | none | cls_bn,
    ``head`` linear (head.fc) | vit (head.layers.head [+ pre_logits when hidden_dim])."""

    family: ClassVar[str] = "mmcls"
    _target_: str = "selfsup_vis.models.classifier.MMClassifier"
    backbone: str = "resnet"
    arch: dict[str, Any] = field(default_factory=dict)  # merged with the yaml's dict
    neck: str = "gap"
    head: str = "linear"
    hidden_dim: int | None = None
    num_classes: int = 1000


@dataclass
class TimmClassifierConfig(ModelConfig):
    family: ClassVar[str] = "timm"
    _target_: str = "selfsup_vis.models.classifier.TimmClassifier"
    model_name: str | None = None  # timm model name; default: ``name``
    pretrained: bool = False  # True uses timm's own download / HF cache
    num_classes: int = 1000
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainedViTConfig(ModelConfig):
    """A released SSL ViT (DINO, DINOv2 [+registers], DINOv3, MoCo v3, I-JEPA, the MAE
    encoder): sizes and the reference's token / interpolation behaviour; ``release`` picks the
    reference (config/model_modern.py ``FAMILY_DEFAULTS`` lists what each one does)."""

    family: ClassVar[str] = "pretrained_vit"
    _target_: str = "selfsup_vis.models.pretrained_vit.PretrainedViT"
    release: str = "dinov2"  # dino | dinov2 | dinov3 | mae | mocov3 | ijepa
    patch_size: int = field(default=14, metadata={"min": 1, "divides": "img_size"})
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_hidden: int | None = None  # MLP / SwiGLU hidden width (None: 4 x embed_dim)
    ffn_layer: str = "mlp"  # mlp | swiglu
    num_register_tokens: int = 0  # DINOv2 registers / DINOv3 storage tokens
    class_token: bool = True
    layerscale: float | None = None
    norm_eps: float = 1.0e-6
    qkv_bias: bool = True
    interpolate_offset: float = 0.0  # DINO / DINOv2: 0.1 (scale_factor), 0: size=
    interpolate_antialias: bool = False  # DINOv2 register models: True
    mask_token: bool = False
    rope_base: float = 100.0
    checkpoint_key: str = "auto"  # model_modern.CHECKPOINT_KEYS
    path: str | None = None  # Hugging Face save_pretrained folder or cached Hub id
    pretrained: bool = False  # no downloads: true without a checkpoint fails with a hint
    hf_layout: bool = False  # DINOv3 from a Hugging Face folder (separate q/k/v)


@dataclass
class MMSelfSupR50Config(ModelConfig):
    """An MMSelfSup / mmpretrain ResNet-50 SSL checkpoint as a backbone (SimCLR, BYOL,
    SimSiam, SwAV, DenseCL, Barlow Twins, MoCo v1/v2): neck and head are reported ignored."""

    family: ClassVar[str] = "mmselfsup_r50"
    _target_: str = "selfsup_vis.models.mmselfsup_r50.MMSelfSupResNet"
    depth: int = 50
    stem_channels: int = 64
    base_channels: int = 64


def model_schemas() -> dict[str, type[ModelConfig]]:
    """Every model schema by family name: the subclasses of :class:`ModelConfig` that name one
    (this file's and those of any imported module, e.g. a user's own family)."""
    found: dict[str, type[ModelConfig]] = {}
    todo = [ModelConfig]
    while todo:
        node = todo.pop(0)
        todo.extend(node.__subclasses__())
        if node.family and node.__module__ in sys.modules:  # (not a module since unloaded)
            if node.family in found and found[node.family] is not node:
                raise ValueError(f"model family {node.family!r} is declared twice: "
                                 f"{found[node.family].__qualname__} and {node.__qualname__}")
            found[node.family] = node
    return found


def register_model_schemas() -> None:
    cs = ConfigStore.instance()
    for name, node in model_schemas().items():
        cs.store(group="schema/model", name=name, node=node)
