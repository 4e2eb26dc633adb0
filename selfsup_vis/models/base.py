"""Shared LightningModule plumbing: named feature extraction, predict_step, checkpoint
loading with a report, and AdamW + linear warmup + cosine decay."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import LoadReport, load_checkpoint

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOKEN_POOLINGS = ("cls", "mean", "cls+mean", "gap")
DEFAULT_OPTIM: dict[str, Any] = {"lr": 1.5e-4, "weight_decay": 0.05, "betas": (0.9, 0.95),
                                 "warmup_ratio": 0.05, "min_lr_ratio": 0.0}


class SSLModule(pl.LightningModule):
    """Base of every selfsup_vis model. Subclasses implement ``_layer_outputs`` (raw outputs
    of the requested base layers), ``available_layers`` and ``key_maps``."""

    #: state-dict prefixes that a checkpoint must provide (missing ones are an error)
    required_prefixes: tuple[str, ...] = ("",)
    #: layers whose outputs are token sequences (B, N, C) and accept a pooling suffix
    token_layers: frozenset[str] = frozenset()

    def __init__(self, name: str = "model", img_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 checkpoint: str | None = None, pipeline: str = "eval", strict: bool = True,
                 pooling: str = "cls", predict_layers: Sequence[str] | None = None,
                 optim: dict[str, Any] | None = None) -> None:
        super().__init__()
        if pooling not in TOKEN_POOLINGS:
            raise ValueError(f"pooling={pooling!r}: expected one of {TOKEN_POOLINGS}")
        self.model_name = name
        self.img_size = int(img_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.checkpoint = checkpoint
        self.pipeline = pipeline
        self.strict = strict
        self.pooling = pooling
        self.predict_layers = list(predict_layers) if predict_layers else None
        self.optim = {**DEFAULT_OPTIM, **(dict(optim) if optim else {})}
        self.load_report: LoadReport | None = None

    # ----------------------------------------------------------------------------- layers
    def available_layers(self) -> list[str]:
        raise NotImplementedError

    def default_layers(self) -> list[str]:
        return [self.available_layers()[-1]]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _parse_layer(self, layer: str) -> tuple[str, str | None]:
        valid = self.available_layers()
        base, _, pool = layer.partition(".")
        if base not in valid or (pool and (base not in self.token_layers or pool not in TOKEN_POOLINGS)):
            suffix = (f"; token layers ({', '.join(sorted(self.token_layers))}) also take a "
                      f"pooling suffix .cls/.mean/.cls+mean/.gap") if self.token_layers else ""
            raise ValueError(f"unknown layer {layer!r} for {type(self).__name__} "
                             f"'{self.model_name}'; valid layers: {', '.join(valid)}{suffix}")
        return base, (pool or None)

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pooled (B, D) feature vectors per requested layer name (see ``available_layers``)."""
        if isinstance(layers, str):
            layers = [layers]
        parsed = {layer: self._parse_layer(layer) for layer in layers}
        raw = self._layer_outputs(images, {b for b, _ in parsed.values()})
        out = {}
        for layer, (base, pool) in parsed.items():
            x = raw[base]
            if self.final_norm_blocks and base.startswith("block"):
                x = self._final_norm(layer)(x)
            out[layer] = self._pool(x, base, pool)
        return out

    #: apply the encoder's final norm to intermediate ViT block outputs too (t-SNE's final_norm)
    final_norm_blocks: bool = False

    def final_norm_layer(self) -> nn.Module | None:
        """The final norm of a ViT encoder (None for backbones without one)."""
        return None

    def _final_norm(self, layer: str) -> nn.Module:
        norm = self.final_norm_layer()
        if norm is None:
            raise ValueError(f"final_norm: {type(self).__name__} '{self.model_name}' has no final norm "
                             f"to apply to {layer!r}")
        return norm

    def _pool(self, x: torch.Tensor, base: str, pool: str | None) -> torch.Tensor:
        if x.dim() == 2:
            return x
        if x.dim() == 4:  # NCHW feature map
            return x.mean(dim=(2, 3))
        pool = pool or self.pooling
        n_prefix = getattr(self, "num_prefix_tokens", 1)
        cls, patches = x[:, 0], x[:, n_prefix:].mean(dim=1)
        if pool == "cls":
            return cls
        if pool in ("mean", "gap"):
            return patches
        return torch.cat([cls, patches], dim=1)

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        layers = self.predict_layers or self.default_layers()
        feats = self.extract_features(batch["image"], layers)
        return {"features": feats, "labels": batch.get("label"), "index": batch.get("index")}

    # ----------------------------------------------------------------------------- weights
    def key_maps(self) -> list[KeyMap]:
        raise NotImplementedError

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        """Adapt a checkpoint tensor whose shape differs (pos-embed, rel-pos tables)."""
        return None

    def load_weights(self, checkpoint: str | Any | None = None, strict: bool | None = None) -> LoadReport:
        checkpoint = checkpoint if checkpoint is not None else self.checkpoint
        if checkpoint is None:
            raise ValueError("no checkpoint given")
        report = load_checkpoint(self, checkpoint, self.key_maps(), required=self.required_prefixes,
                                 strict=self.strict if strict is None else strict,
                                 resize=self.resize_tensor)
        self.load_report = report
        return report

    # ----------------------------------------------------------------------------- optim
    def configure_optimizers(self) -> Any:
        o = self.optim
        decay, no_decay = [], []
        for n, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or n.endswith(("token", "pos_embed", "bias_table")) else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=o["lr"], betas=tuple(o["betas"]))
        total = max(1, int(getattr(self.trainer, "estimated_stepping_batches", 1) or 1))
        warm = int(total * float(o["warmup_ratio"]))
        floor = float(o["min_lr_ratio"])

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        for k, v in losses.items():
            self.log(f"train/{k}", v, prog_bar=(k == "loss"), batch_size=batch_size, sync_dist=True)

    # ----------------------------------------------------------------------------- display
    def pixel_panels(self, images: torch.Tensor, rec: torch.Tensor, pix: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four display panels (0..1) from normalised images, a reconstruction in the same
        space and the pixel mask (B, 1, H, W; 1 = masked)."""
        return {
            "original": self.denormalize(images),
            "masked": self.denormalize(images) * (1 - pix),
            "reconstruction": self.denormalize(rec),
            "reconstruction_visible": self.denormalize(images * (1 - pix) + rec * pix),
        }

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Model-normalised images -> 0..1 display range with this model's own mean/std."""
        m = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images * s + m).clamp(0, 1)


class ViTEncoderFeatures:
    """Layers of a timm ViT ``self.encoder`` (blocks + final norm) for MAE and MaskFeat."""

    encoder: nn.Module

    def final_norm_layer(self) -> nn.Module | None:
        return self.encoder.norm

    def available_layers(self) -> list[str]:
        return [f"block{i}" for i in range(len(self.encoder.blocks))] + ["norm"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        from selfsup_vis.models.backbones import vit_blocks, vit_embed

        final, outs = vit_blocks(self.encoder, vit_embed(self.encoder, images), layers)
        outs["norm"] = final
        return outs

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Un-masked encoder tokens (B, 1+L, C) after the final norm (mmpretrain extract_feat)."""
        from selfsup_vis.models.backbones import vit_blocks, vit_embed

        return vit_blocks(self.encoder, vit_embed(self.encoder, images), set())[0]

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        from selfsup_vis.models.backbones import resize_vit_pos_embed

        if key.endswith("pos_embed"):
            return resize_vit_pos_embed(tensor, ref)
        return None


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
