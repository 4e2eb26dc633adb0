"""MaskFeat (Wei et al.) on a timm ViT: masked tokens replaced by a learned mask token, a linear
head predicting per-patch HOG features, MSE on masked patches; numerically mmpretrain's."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.models.backbones import build_vit, vit_blocks, vit_embed
from selfsup_vis.models.base import SSLModule, ViTEncoderFeatures
from selfsup_vis.models.hog import HOGGenerator, hog_glyphs
from selfsup_vis.models.mae import patch_mask_to_pixels


class MaskFeat(ViTEncoderFeatures, SSLModule):
    """MaskFeat LightningModule: ``encoder`` (timm ViT), ``mask_token``, ``predictor``
    (mmpretrain ``neck.fc``) and ``hog`` (mmpretrain ``target_generator``)."""

    required_prefixes = ("encoder.",)

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 hog_nbins: int = 9, hog_pool: int = 8, hog_gaussian_window: int = 16,
                 num_masking_patches: int | None = None, min_num_patches: int = 15,
                 drop_path_rate: float = 0.0, pipeline: str = "maskfeat", **common: Any) -> None:
        super().__init__(img_size=img_size, pipeline=pipeline, **common)
        self.save_hyperparameters()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        # default mask size: 78 of 196 patches (40 %), scaled to other grids
        self.num_masking_patches = num_masking_patches or max(1, round(0.4 * self.grid**2))
        self.min_num_patches = min(min_num_patches, self.num_masking_patches)
        self.encoder = build_vit(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                                 drop_path_rate=drop_path_rate)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.hog = HOGGenerator(hog_nbins, hog_pool, hog_gaussian_window, tokens_per_side=self.grid)
        self.predictor = nn.Linear(embed_dim, self.hog.out_dim(patch_size))
        self.num_prefix_tokens = 1
        self.token_layers = frozenset([*(f"block{i}" for i in range(depth)), "norm"])

    def encode_masked(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1+L, C) tokens with masked patches (mask (B, L) or (B, h, w), 1 = masked)."""
        x = vit_embed(self.encoder, images, mask.flatten(1).bool(), self.mask_token)
        return vit_blocks(self.encoder, x, set())[0]

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.flatten(1).to(pred.dtype)
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * m).sum() / m.sum()

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.encode_masked(images, mask)
        pred = self.predictor(latent)  # includes the cls position 0
        target = self.hog(images)
        return {"latent": latent, "pred": pred, "target": target,
                "loss": self.loss(pred[:, 1:], target, mask)}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["image"], batch["mask"])
        self.log_losses({"loss": out["loss"]}, batch["image"].shape[0])
        return out["loss"]

    def make_mask(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Blockwise (BEiT) masks from selfsup_vis.data.masks, (B, h, w) int64."""
        from selfsup_vis.data.masks import BlockwiseMaskGenerator

        gen = BlockwiseMaskGenerator(input_size=self.grid, num_masking_patches=self.num_masking_patches,
                                     min_num_patches=self.min_num_patches)
        return torch.stack([torch.as_tensor(gen(generator)) for _ in range(batch)]).long()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, Any]:
        """HOG prediction / target (B, L, D), the mask (B, h, w) and four panels in HOG space
        (glyph images in 0..1: original HOG, masked, predicted, predicted + visible)."""
        B = images.shape[0]
        if mask is None:
            mask = self.make_mask(B, generator)
        mask = mask.reshape(B, self.grid, self.grid).to(images.device)
        out = self(images, mask)
        pred, target = out["pred"][:, 1:], out["target"]
        m = mask.flatten(1).unsqueeze(-1).to(pred.dtype)
        mixed = target * (1 - m) + pred * m
        cells = {k: self.hog.untokens(v) for k, v in
                 {"target": target, "pred": pred, "mixed": mixed}.items()}
        pix = patch_mask_to_pixels(mask, self.grid, self.patch_size)

        ref = hog_glyphs(cells["target"], self.hog.pool)
        scale = ref.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)  # one scale per image

        def glyph(c: torch.Tensor) -> torch.Tensor:
            return (hog_glyphs(c, self.hog.pool) / scale).clamp(0, 1).expand(-1, 3, -1, -1)

        return {
            "pred": pred, "target": target, "mask": mask.long(), "mask_pixels": pix,
            "loss": out["loss"], "image": images, "pred_cells": cells["pred"],
            "target_cells": cells["target"],
            "panels": {
                "original": glyph(cells["target"]),
                "masked": glyph(cells["target"]) * (1 - pix),
                "reconstruction": glyph(cells["pred"]),
                "reconstruction_visible": glyph(cells["mixed"]),
            },
            "image_display": self.denormalize(images),
        }

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_maskfeat(), rules.timm_vit_encoder(), rules.identity()]
