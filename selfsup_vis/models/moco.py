"""MoCo v2 (Chen et al.) on a timm ResNet: 2-layer MLP neck, momentum encoder, negative queue,
InfoNCE; numerically mmpretrain's ``MoCo`` (whose ``momentum`` is the EMA weight of the online
model, 0.001, i.e. 1 - 0.999 of the MMSelfSup 1.x / paper convention)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import MoCoV2Config
from selfsup_vis.models.backbones import (
    RESNET_LAYERS,
    build_resnet,
    named_intermediates,
    resnet_stages,
)
from selfsup_vis.models.base import NOT_HPARAMS, SSLModule, set_requires_grad
from selfsup_vis.models.mmconfig import resnet_kwargs


class MoCoV2Neck(nn.Module):
    """Global average pool + fc-ReLU-fc (``mlp.0``, ``mlp.2``)."""

    def __init__(self, in_channels: int, hid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hid_channels), nn.ReLU(inplace=True),
                                 nn.Linear(hid_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.adaptive_avg_pool2d(x, 1).flatten(1))


@takes_schema(MoCoV2Config)
class MoCoV2(SSLModule):
    """MoCo v2 LightningModule: ``backbone``/``neck`` (online), ``momentum_backbone``/
    ``momentum_neck`` (EMA), ``queue`` (feat_dim, queue_len), ``queue_ptr``."""

    required_prefixes = ("backbone.",)
    mm_types = ("MoCo", "MoCoV2")

    def __init__(self, *, depth: int, stem_channels: int, base_channels: int,
                 layers: tuple[int, ...] | None, neck_hidden: int, feat_dim: int, queue_len: int,
                 momentum: float, temperature: float, **common: Any) -> None:
        super().__init__(**common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.momentum, self.temperature = momentum, temperature
        self.backbone = build_resnet(depth, stem_channels, base_channels, layers)
        self.neck = MoCoV2Neck(self.backbone.num_features, neck_hidden, feat_dim)
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_neck = copy.deepcopy(self.neck)
        set_requires_grad(self.momentum_backbone, False)
        set_requires_grad(self.momentum_neck, False)
        self.register_buffer("queue", F.normalize(torch.randn(feat_dim, queue_len), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("momentum_steps", torch.zeros((), dtype=torch.long))
        self.configure_features()

    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        neck, head = cfg.get("neck") or {}, cfg.get("head") or {}
        return {**resnet_kwargs(cfg.get("backbone", {})), "queue_len": cfg.get("queue_len", 65536),
                "feat_dim": cfg.get("feat_dim", 128), "momentum": cfg.get("momentum", 0.001),
                "temperature": head.get("temperature", 0.2), "neck_hidden": neck.get("hid_channels", 2048)}

    # -------------------------------------------------------------------------- contrastive
    def query(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(resnet_stages(self.backbone, images)[0])

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        return self.momentum_neck(resnet_stages(self.momentum_backbone, images)[0])

    def contrast(self, q: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat((l_pos, l_neg), dim=1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return {"q": q, "k": k, "l_pos": l_pos, "l_neg": l_neg, "logits": logits,
                "loss": F.cross_entropy(logits, labels)}

    @torch.no_grad()
    def momentum_update(self) -> None:
        """mmengine ExponentialMovingAverage: copy at step 0, then lerp params by
        ``momentum``; buffers (BN statistics) follow the online model."""
        pairs = [(self.momentum_backbone, self.backbone), (self.momentum_neck, self.neck)]
        for avg, src in pairs:
            for pa, ps in zip(avg.parameters(), src.parameters()):
                if int(self.momentum_steps) == 0:
                    pa.copy_(ps.detach())
                else:
                    pa.lerp_(ps.detach(), self.momentum)
            for ba, bs in zip(avg.buffers(), src.buffers()):
                ba.copy_(bs)
        self.momentum_steps += 1

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Push the keys of every rank (``self.all_gather``) into the queue."""
        if self._trainer is not None and self.trainer.world_size > 1:
            keys = self.all_gather(keys).flatten(0, 1)
        n, ptr, qlen = keys.shape[0], int(self.queue_ptr), self.queue.shape[1]
        idx = (torch.arange(n, device=keys.device) + ptr) % qlen
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + n) % qlen

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        im_q, im_k = batch["views"][0], batch["views"][1]
        q = self.query(im_q)
        self.momentum_update()
        perm = torch.randperm(im_k.shape[0], device=im_k.device)  # shuffle-BN (local)
        k = self.key(im_k[perm])[torch.argsort(perm)]
        out = self.contrast(q, k)
        self.enqueue(out["k"])
        self.log_losses({"loss": out["loss"]}, im_q.shape[0])
        return out["loss"]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything MoCo.loss computes for im_q = im_k = images (no EMA update / enqueue)."""
        last, stages = resnet_stages(self.backbone, images)
        neck = self.neck(last)
        key_last = resnet_stages(self.momentum_backbone, images)[0]
        key_neck = self.momentum_neck(key_last)
        out = self.contrast(neck, key_neck)
        out.update(stages=stages, neck=neck, key_backbone=key_last, key_neck=key_neck)
        return out

    # -------------------------------------------------------------------------- features
    def available_layers(self) -> list[str]:
        return [*RESNET_LAYERS, "neck"]

    def default_layers(self) -> list[str]:
        return ["layer4"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        last, outs = named_intermediates(self.backbone, images, layers, need_final="neck" in layers)
        if "neck" in layers:
            outs["neck"] = self.neck(last)
        return outs

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_moco(), rules.official_moco(), rules.timm_resnet_backbone(), rules.identity()]
