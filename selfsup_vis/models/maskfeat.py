"""MaskFeat (Wei et al.) on a timm ViT: masked tokens replaced by a learned mask token, a linear
head predicting per-patch HOG features, MSE on masked patches; numerically mmpretrain's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import MaskFeatConfig
from selfsup_vis.data.masks import BlockwiseMaskGenerator
from selfsup_vis.models.backbones import build_vit, vit_blocks, vit_embed
from selfsup_vis.models.base import NOT_HPARAMS, ViTEncoderFeatures
from selfsup_vis.models.hog import HOGGenerator
from selfsup_vis.models.mae import patch_mask_to_pixels
from selfsup_vis.models.masked import MaskedImageModule, MaskedReconstruction
from selfsup_vis.models.mmconfig import vit_kwargs

#: default number of masked patches: 78 of 196 (40 %), scaled to other grids
DEFAULT_MASK_FRACTION = 0.4


@takes_schema(MaskFeatConfig)
class MaskFeat(ViTEncoderFeatures, MaskedImageModule):
    """MaskFeat LightningModule: ``encoder`` (timm ViT), ``mask_token``, ``predictor``
    (mmpretrain ``neck.fc``) and ``hog`` (mmpretrain ``target_generator``); its training
    batches carry the mask the data pipeline drew with :meth:`mask_generator`."""

    required_prefixes = ("encoder.",)
    mask_args = ("img_size", "patch_size", "num_masking_patches", "min_num_patches")
    data_masks = True
    mm_types = ("MaskFeat",)

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, hog_nbins: int, hog_pool: int, hog_gaussian_window: int,
                 num_masking_patches: int | None, min_num_patches: int, drop_path_rate: float,
                 **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        gen = self.mask_generator()
        self.num_masking_patches, self.min_num_patches = gen.num_masking_patches, gen.min_num_patches
        self.encoder = build_vit(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                                 drop_path_rate=drop_path_rate)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.hog = HOGGenerator(hog_nbins, hog_pool, hog_gaussian_window, tokens_per_side=self.grid)
        self.predictor = nn.Linear(embed_dim, self.hog.out_dim(patch_size))
        self.num_prefix_tokens = 1
        self.token_layers = frozenset([*(f"block{i}" for i in range(depth)), "norm"])
        self.configure_features()

    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        tg = cfg.get("target_generator", {})
        return {**vit_kwargs(cfg.get("backbone", {})), "hog_nbins": tg.get("nbins", 9),
                "hog_pool": tg.get("pool", 8), "hog_gaussian_window": tg.get("gaussian_window", 16)}

    @classmethod
    def build_mask_generator(cls, args: Mapping[str, Any], mask_ratio: float | None = None
                             ) -> BlockwiseMaskGenerator:
        """BEiT blockwise masks: ``num_masking_patches`` (or ``mask_ratio`` of the grid; default
        40 %) in blocks of at least ``min(min_num_patches, masked patches)`` patches, as
        mmpretrain's ``BEiTMaskGenerator`` (the one rule for pipeline, reconstruct and callback)."""
        grid = int(args["img_size"]) // int(args["patch_size"])
        if mask_ratio is not None:
            n_mask = int(round(float(mask_ratio) * grid * grid))
        else:
            n_mask = args["num_masking_patches"] or max(1, round(DEFAULT_MASK_FRACTION * grid * grid))
        return BlockwiseMaskGenerator(grid, n_mask, min(int(args["min_num_patches"]), n_mask))

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

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> MaskedReconstruction:
        """HOG prediction / target (B, L, D), the mask (B, h, w), the HOG cells (B, 3, nbins,
        h, w) of target, prediction and prediction + visible, and the image for display; the one
        HOG renderer is ``selfsup_vis.reconstruction.plots.draw_hog``."""
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
        return MaskedReconstruction(
            space="features", target_name="HOG", mask=mask.long(), mask_pixels=pix, pred=pred,
            target=target, loss=out["loss"], per_patch_error=((pred.float() - target.float()) ** 2).mean(-1),
            error_kind="hog_mse", original=self.denormalize(images), hog=cells,
            arrays={"target_cells": cells["target"], "pred_cells": cells["pred"], "pred": pred,
                    "target": target})

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_maskfeat(), rules.timm_vit_encoder(), rules.identity()]
