"""MAE (He et al.) on a timm ViT: random masking with injectable noise, the MAE decoder and the
(norm-pix) MSE loss on masked patches; numerically the mmpretrain 1.x ``MAE``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.formats.hf import load_hf_mae
from selfsup_vis.checkpoints.formats.mae_official import refuse_without_decoder
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import LoadReport
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import MAEConfig
from selfsup_vis.data.masks import RandomMaskGenerator
from selfsup_vis.models.backbones import (
    build_vit,
    sincos_pos_embed,
)
from selfsup_vis.models.base import NOT_HPARAMS, ViTEncoderFeatures
from selfsup_vis.models.masked import MaskedImageModule, MaskedReconstruction
from selfsup_vis.models.mmconfig import vit_kwargs


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, L, p*p*3) with MAE's 'nchpwq->nhwpqc' layout (c fastest)."""
    b, c, H, W = images.shape
    h, w = H // p, W // p
    x = images.reshape(b, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, h * w, p * p * c)


def unpatchify(x: torch.Tensor, p: int, channels: int = 3) -> torch.Tensor:
    b, L, _ = x.shape
    h = w = int(round(L**0.5))
    x = x.reshape(b, h, w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, h * p, w * p)


def patch_mask_to_pixels(mask: torch.Tensor, grid: int, p: int) -> torch.Tensor:
    """(B, L) or (B, h, w) patch mask -> (B, 1, H, W) float pixel mask."""
    m = mask.reshape(mask.shape[0], grid, grid).float()
    return m.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)


class MAEDecoder(nn.Module):
    """mmpretrain ``MAEPretrainDecoder``: embed, mask tokens, unshuffle, fixed pos-embed,
    transformer blocks (LN eps ``norm_eps``), norm, per-patch pixel prediction."""

    def __init__(self, num_patches: int, patch_size: int, in_chans: int, embed_dim: int,
                 decoder_embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 norm_eps: float) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        grid = int(round(num_patches**0.5))
        self.pos_embed = nn.Parameter(sincos_pos_embed(decoder_embed_dim, grid), requires_grad=False)
        self.blocks = nn.ModuleList(Block(decoder_embed_dim, num_heads, mlp_ratio, qkv_bias=True,
                                          norm_layer=partial(nn.LayerNorm, eps=norm_eps))
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        n_mask = ids_restore.shape[1] + 1 - x.shape[1]
        mask_tokens = self.mask_token.repeat(x.shape[0], n_mask, 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:, :]


@takes_schema(MAEConfig)
class MAE(ViTEncoderFeatures, MaskedImageModule):
    """MAE LightningModule. ``encoder`` is a timm ``VisionTransformer``; masks are drawn inside
    :meth:`forward_encoder` (the data pipeline draws none)."""

    required_prefixes = ("encoder.",)
    mask_args = ("img_size", "patch_size", "mask_ratio")
    mm_types = ("MAE",)

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, decoder_embed_dim: int, decoder_depth: int, decoder_num_heads: int,
                 decoder_mlp_ratio: float, mask_ratio: float, norm_pix: bool, drop_path_rate: float,
                 norm_eps: float, **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.patch_size, self.mask_ratio, self.norm_pix = patch_size, mask_ratio, norm_pix
        self.norm_eps = float(norm_eps)
        self.encoder = build_vit(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                                 drop_path_rate=drop_path_rate, norm_eps=norm_eps)
        self.grid = img_size // patch_size
        with torch.no_grad():  # MAE uses a fixed sin-cos encoder pos-embed
            self.encoder.pos_embed.copy_(sincos_pos_embed(embed_dim, self.grid))
        self.encoder.pos_embed.requires_grad_(False)
        self.decoder = MAEDecoder(self.grid**2, patch_size, 3, embed_dim, decoder_embed_dim,
                                  decoder_depth, decoder_num_heads, decoder_mlp_ratio, norm_eps)
        self.num_prefix_tokens = 1
        self.token_layers = frozenset([*(f"block{i}" for i in range(depth)), "norm"])
        self.configure_features()

    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        b, neck, head = cfg.get("backbone", {}), cfg.get("neck") or {}, cfg.get("head") or {}
        return {**vit_kwargs(b), "mask_ratio": b.get("mask_ratio", 0.75),
                "decoder_embed_dim": neck.get("decoder_embed_dim", 512),
                "decoder_depth": neck.get("decoder_depth", 8),
                "decoder_num_heads": neck.get("decoder_num_heads", 16),
                "decoder_mlp_ratio": neck.get("mlp_ratio", 4.0), "norm_pix": head.get("norm_pix", False)}

    # -------------------------------------------------------------------------- masking
    @classmethod
    def build_mask_generator(cls, args: Mapping[str, Any], mask_ratio: float | None = None
                             ) -> RandomMaskGenerator:
        """Random masking with the ratio :meth:`forward_encoder` uses (for reconstructions)."""
        ratio = args["mask_ratio"] if mask_ratio is None else mask_ratio
        return RandomMaskGenerator(int(args["img_size"]) // int(args["patch_size"]), float(ratio))

    def len_keep(self) -> int:
        return int(self.grid**2 * (1 - self.mask_ratio))

    def forward_encoder(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None, len_keep: int | None = None
                        ) -> dict[str, torch.Tensor]:
        """Masked encoder. ``noise`` (B, L): small = kept (mmpretrain draws ``torch.rand``)."""
        x = self.encoder.patch_embed(images)
        B, L, D = x.shape
        x = x + self.encoder.pos_embed[:, 1:, :]
        if noise is None:
            noise = torch.rand(B, L, device=x.device, generator=generator) if generator is None \
                else torch.rand(B, L, generator=generator).to(x.device)
        keep = self.len_keep() if len_keep is None else len_keep
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([B, L], device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.encoder.cls_token + self.encoder.pos_embed[:, :1, :]).expand(B, -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.encoder.blocks:
            x = blk(x)
        latent = self.encoder.norm(x)
        return {"latent": latent, "mask": mask, "ids_restore": ids_restore,
                "ids_keep": ids_keep, "ids_shuffle": ids_shuffle, "noise": noise}

    def target(self, images: torch.Tensor) -> torch.Tensor:
        t = patchify(images, self.patch_size)
        if self.norm_pix:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1.0e-6) ** 0.5
        return t

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        out = self.forward_encoder(images, noise=noise, generator=generator)
        out["pred"] = self.decoder(out["latent"], out["ids_restore"])
        out["target"] = self.target(images)
        out["loss"] = self.loss(out["pred"], out["target"], out["mask"])
        return out

    # -------------------------------------------------------------------------- reconstruct
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, noise: torch.Tensor | None = None
                    ) -> MaskedReconstruction:
        """Per-patch prediction and target (B, L, p*p*3) and the mask used (B, h, w; 1 = masked).
        Without norm-pix also the image reconstructed from the prediction and the four panels.
        A norm-pix prediction has no pixel values of its own: turning it into an image needs
        per-patch statistics, and a masked patch's own are hidden information, so no image is
        returned here (``reconstruction`` None, ``panels`` empty); ``selfsup_vis.reconstruction
        .display`` draws it from the visible patches' statistics (or, labelled, MMSelfSup's way).

        A given ``mask`` (B, L) or (B, h, w) must mask the same number of patches in every image.
        An encoder-only checkpoint (official ``mae_pretrain_vit_*.pth``) is refused unless the
        model was built with ``allow_random_parts`` (then the decoder is random and flagged)."""
        refuse_without_decoder(self)
        B = images.shape[0]
        len_keep = None
        if mask is not None:
            m = mask.reshape(B, -1).float().to(images.device)
            counts = (m == 0).sum(1)
            if not bool((counts == counts[0]).all()):
                raise ValueError("MAE reconstruct: every image's mask must keep the same number of patches")
            len_keep = int(counts[0])
            noise = m + 0.5 * torch.rand(m.shape, generator=generator).to(m.device)
        enc = self.forward_encoder(images, noise=noise, generator=generator, len_keep=len_keep)
        pred = self.decoder(enc["latent"], enc["ids_restore"])
        target = self.target(images)
        p = self.patch_size
        rec = None if self.norm_pix else unpatchify(pred, p)
        pix = patch_mask_to_pixels(enc["mask"], self.grid, p)
        return MaskedReconstruction(
            space="pixels", mask=enc["mask"].reshape(B, self.grid, self.grid).long(), mask_pixels=pix,
            pred=pred, target=target, loss=self.loss(pred, target, enc["mask"]),
            per_patch_error=((pred.float() - target.float()) ** 2).mean(-1),
            error_kind="norm_pix_mse" if self.norm_pix else "pixel_mse",
            original=self.denormalize(images), reconstruction=rec,
            panels={} if rec is None else self.pixel_panels(images, rec, pix), arrays={"pred": pred, "target": target},
            inputs=images, patch_size=p, norm_pix_eps=1.0e-6 if self.norm_pix else None)

    # -------------------------------------------------------------------------- weights
    def load_weights(self, checkpoint: str | Any | None = None, strict: bool | None = None) -> LoadReport:
        """Also a Hugging Face ViTMAEForPreTraining save_pretrained folder (formats/hf.py)."""
        checkpoint = checkpoint if checkpoint is not None else self.checkpoint
        if isinstance(checkpoint, str | Path) and Path(checkpoint).is_dir():
            self.load_report = load_hf_mae(self, checkpoint, self.strict if strict is None else strict)
            return self.load_report
        return super().load_weights(checkpoint, strict)

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_mae(), rules.official_mae(), rules.identity()]
