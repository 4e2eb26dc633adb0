"""Classifiers for shape bias: any timm model by name, or an mmpretrain ``ImageClassifier``
checkpoint (ResNet / ViT / Swin backbone + optional neck + LinearClsHead or
VisionTransformerClsHead), both returning class logits from ``forward``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.hub import require_timm_weights
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import MMClassifierConfig, TimmClassifierConfig
from selfsup_vis.models.backbones import (
    RESNET_LAYERS,
    build_resnet,
    build_swin,
    build_vit,
    named_intermediates,
    resize_swin_table,
    resize_vit_pos_embed,
    resnet_stages,
    supports_intermediates,
    swin_stages,
    timm_layer_names,
)
from selfsup_vis.models.base import NOT_HPARAMS, SSLModule
from selfsup_vis.models.mmconfig import resnet_kwargs, swin_kwargs, vit_kwargs


class ClsHead(nn.Module):
    """``fc`` (LinearClsHead / VisionTransformerClsHead ``layers.head``), optionally after
    ``pre_logits`` Linear + Tanh (VisionTransformerClsHead with ``hidden_dim``)."""

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.pre_logits = nn.Linear(in_dim, hidden_dim) if hidden_dim else None
        self.fc = nn.Linear(hidden_dim or in_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_logits(x)) if self.pre_logits is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ClsBatchNormNeck(nn.Module):
    """mmpretrain ``ClsBatchNormNeck`` (MAE linear probe): BatchNorm1d without affine."""

    def __init__(self, dim: int, affine: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=affine, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class _ClassifierBase(SSLModule):
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["image"]), batch["label"])
        self.log_losses({"loss": loss}, batch["image"].shape[0])
        return loss

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        out = super().predict_step(batch, batch_idx, dataloader_idx)
        out["logits"] = self(batch["image"])
        return out


@takes_schema(MMClassifierConfig)
class MMClassifier(_ClassifierBase):
    """mmpretrain ``ImageClassifier``. ``backbone``: resnet | vit | swin with ``arch`` kwargs
    for :func:`build_resnet` / :func:`build_vit` / :func:`build_swin`; ``neck``: gap (ResNet,
    Swin) | none (ViT: cls token or ``avg_featmap`` + ``ln2``) | cls_bn; ``head``: linear
    (``head.fc``) | vit (``head.layers.head`` [+ ``pre_logits`` Tanh when ``hidden_dim``])."""

    mm_types = ("ImageClassifier",)

    def __init__(self, *, backbone: str, arch: dict[str, Any] | None, neck: str, head: str,
                 hidden_dim: int | None, num_classes: int, img_size: int, **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        arch = dict(arch or {})
        self.kind, self.head_kind = backbone, head
        if backbone == "resnet":
            self.backbone = build_resnet(**arch)
        elif backbone == "vit":
            self.backbone = build_vit(img_size=img_size, **arch)
            self.num_prefix_tokens = 1
            self.token_layers = frozenset(
                [*(f"block{i}" for i in range(len(self.backbone.blocks))), "norm"])
        elif backbone == "swin":
            self.backbone = build_swin(img_size=img_size, **arch)
        else:
            raise ValueError(f"MMClassifier backbone={backbone!r}: expected resnet, vit or swin")
        dim = self.backbone.num_features
        self.neck = ClsBatchNormNeck(dim) if neck == "cls_bn" else None
        self.head = ClsHead(dim, num_classes, hidden_dim if head == "vit" else None)
        self.configure_features()

    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        b, neck, head = cfg.get("backbone", {}), cfg.get("neck") or {}, cfg.get("head") or {}
        btype = b["type"]
        if btype in ("VisionTransformer", "MAEViT", "MaskFeatViT"):
            arch = vit_kwargs(b)
            arch.update(out_type=b.get("out_type", "cls_token"), final_norm=b.get("final_norm", True))
            backbone = "vit"
        elif btype in ("SwinTransformer", "SimMIMSwinTransformer"):
            arch, backbone = swin_kwargs(b), "swin"
        elif btype == "ResNet":
            arch, backbone = resnet_kwargs(b), "resnet"
        else:
            raise ValueError(f"unsupported ImageClassifier backbone {btype!r}")
        ntype = neck.get("type") if neck else None
        return {"backbone": backbone, "img_size": arch.pop("img_size", 224), "arch": arch,
                "neck": {"GlobalAveragePooling": "gap", "ClsBatchNormNeck": "cls_bn", None: "none"}[ntype],
                "head": "vit" if head.get("type") == "VisionTransformerClsHead" else "linear",
                "hidden_dim": head.get("hidden_dim"), "num_classes": head.get("num_classes", 1000)}

    def feats(self, images: torch.Tensor) -> torch.Tensor:
        """mmpretrain ``extract_feat``: pooled backbone (+ neck) output fed to the head."""
        if self.kind == "resnet":
            x = resnet_stages(self.backbone, images, set())[0].mean(dim=(2, 3))
        elif self.kind == "swin":
            x = swin_stages(self.backbone, images, set())[0].mean(dim=(2, 3))
        else:
            x = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return self.neck(x) if self.neck is not None else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.feats(images))

    def available_layers(self) -> list[str]:
        if self.kind == "resnet":
            base = list(RESNET_LAYERS)
        elif self.kind == "swin":
            base = [f"stage{i}" for i in range(len(self.backbone.layers))] + ["norm"]
        else:
            base = [f"block{i}" for i in range(len(self.backbone.blocks))] + ["norm"]
        return [*base, "feats", "pre_logits", "logits"]

    def default_layers(self) -> list[str]:
        return ["pre_logits"]

    def final_norm_layer(self) -> nn.Module | None:
        return self.backbone.norm if self.kind == "vit" else None

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        final, outs = named_intermediates(self.backbone, images, layers, need_final="norm" in layers)
        if self.kind != "resnet":
            outs["norm"] = final
        if layers & {"feats", "pre_logits", "logits"}:
            f = self.feats(images)
            outs.update(feats=f, pre_logits=self.head.features(f), logits=self.head(f))
        return outs

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_classifier(self.kind, self.head_kind), rules.timm_classifier(self.kind),
                rules.identity()]

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        if key.endswith("pos_embed"):
            return resize_vit_pos_embed(tensor, ref)
        if key.endswith("relative_position_bias_table"):
            return resize_swin_table(tensor, ref)
        return None


@takes_schema(TimmClassifierConfig)
class TimmClassifier(_ClassifierBase):
    """Any timm classifier by name. ``pretrained`` uses timm's own download/cache (off by
    default: no network needed); ``checkpoint`` loads a timm state dict or one of ours."""

    def __init__(self, *, model_name: str | None, pretrained: bool, num_classes: int, img_size: int,
                 model_kwargs: dict[str, Any] | None, **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        model_name = model_name or self.model_name  # `model=timm model.name=resnet50`
        if model_name not in timm.list_models() and model_name.split(".")[0] not in timm.list_models():
            raise ValueError(f"unknown timm model {model_name!r} (see timm.list_models())")
        if pretrained:  # cached, or the Hub answers: else fail now, not after ~50 s of retries
            require_timm_weights(model_name)
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes,
                                       **dict(model_kwargs or {}))
        self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 1)
        # intermediate layers of any timm model with forward_intermediates (timm_layer_names)
        self.intermediate_layers = timm_layer_names(self.model) if supports_intermediates(self.model) else []
        if self.intermediate_layers and hasattr(self.model, "cls_token") and hasattr(self.model, "blocks"):
            self.token_layers = frozenset(n for n in self.intermediate_layers if n.startswith("block"))
        self.configure_features()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def available_layers(self) -> list[str]:
        return [*self.intermediate_layers, "pre_logits", "logits"]

    def default_layers(self) -> list[str]:
        return ["pre_logits"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        outs: dict[str, torch.Tensor] = {}
        if layers & set(self.intermediate_layers):
            outs.update(named_intermediates(self.model, images, layers, need_final=False)[1])
        if layers & {"pre_logits", "logits"}:
            feats = self.model.forward_features(images)
            outs["pre_logits"] = self.model.forward_head(feats, pre_logits=True)
            outs["logits"] = self.model.forward_head(feats)
        return outs

    def key_maps(self) -> list[KeyMap]:
        return [KeyMap("timm model", [("", "model.")]), rules.identity()]
