"""SimMIM (Xie et al.) on a timm Swin: mask token after the patch embedding, linear decoder
(1x1 conv + PixelShuffle), L1 on masked pixels; numerically mmpretrain's ``SimMIM``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import SimMIMConfig
from selfsup_vis.data.masks import SimMIMMaskGenerator
from selfsup_vis.models.backbones import (
    build_swin,
    named_intermediates,
    resize_swin_table,
    swin_stages,
)
from selfsup_vis.models.base import NOT_HPARAMS
from selfsup_vis.models.masked import MaskedImageModule, MaskedReconstruction
from selfsup_vis.models.mmconfig import swin_kwargs


@takes_schema(SimMIMConfig)
class SimMIM(MaskedImageModule):
    """SimMIM LightningModule: ``encoder`` (timm SwinTransformer), ``mask_token``, ``decoder``;
    its training batches carry the mask the data pipeline drew with :meth:`mask_generator`."""

    required_prefixes = ("encoder.",)
    mask_args = ("img_size", "patch_size", "mask_patch_size", "mask_ratio")
    data_masks = True
    mm_types = ("SimMIM",)

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depths: tuple[int, ...],
                 num_heads: tuple[int, ...], window_size: int, mlp_ratio: float, pad_small_map: bool,
                 encoder_stride: int, mask_patch_size: int, mask_ratio: float, drop_path_rate: float,
                 **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.patch_size, self.encoder_stride = patch_size, encoder_stride
        self.mask_patch_size, self.mask_ratio = mask_patch_size, mask_ratio
        self.encoder = build_swin(img_size, patch_size, embed_dim, depths, num_heads, window_size,
                                  mlp_ratio, pad_small_map, drop_path_rate)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        out_ch = self.encoder.num_features
        self.decoder = nn.Sequential(
            nn.Conv2d(out_ch, encoder_stride**2 * 3, kernel_size=1), nn.PixelShuffle(encoder_stride))
        self.grid = img_size // patch_size
        self.configure_features()

    @classmethod
    def kwargs_from_mm(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        neck = cfg.get("neck") or {}
        return {**swin_kwargs(cfg.get("backbone", {})), "encoder_stride": neck.get("encoder_stride", 32)}

    @classmethod
    def build_mask_generator(cls, args: Mapping[str, Any], mask_ratio: float | None = None
                             ) -> SimMIMMaskGenerator:
        """Random ``mask_patch_size`` squares covering ``mask_ratio`` of the image, on the
        model's patch grid (mmpretrain ``SimMIMMaskGenerator``)."""
        ratio = args["mask_ratio"] if mask_ratio is None else mask_ratio
        return SimMIMMaskGenerator(int(args["img_size"]), int(args["mask_patch_size"]),
                                   int(args["patch_size"]), float(ratio))

    def encode(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm feature map (B, C, H/32, W/32); ``mask`` (B, H/p, W/p), 1 = masked."""
        return swin_stages(self.encoder, images, set(), mask, self.mask_token)[0]

    def loss(self, rec: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous().to(rec.dtype)
        l1 = (rec - images).abs()
        return (l1 * m).sum() / m.sum() / 3

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.encode(images, mask)
        rec = self.decoder(feat)
        return {"feat": feat, "rec": rec, "loss": self.loss(rec, images, mask)}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> MaskedReconstruction:
        """Prediction (B, 3, H, W) in the model's normalised space, the mask (B, H/p, W/p),
        the target (= input), the per-patch pixel MSE and the four display panels (0..1)."""
        if mask is None:
            mask = self.make_mask(images.shape[0], generator).to(images.device)
        out = self(images, mask)
        p = self.patch_size
        pix = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).to(images.dtype)
        rec = out["rec"]
        se = ((rec.float() - images.float()) ** 2).mean(1, keepdim=True)  # (B, 1, H, W)
        per_patch = torch.nn.functional.avg_pool2d(se, p).reshape(images.shape[0], -1)
        return MaskedReconstruction(
            space="pixels", mask=mask.long(), mask_pixels=pix, pred=rec, target=images,
            loss=out["loss"], per_patch_error=per_patch, error_kind="pixel_mse",
            original=self.denormalize(images), reconstruction=rec,
            panels=self.pixel_panels(images, rec, pix), inputs=images, patch_size=p)

    def available_layers(self) -> list[str]:
        return [f"stage{i}" for i in range(len(self.encoder.layers))] + ["norm"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        final, outs = named_intermediates(self.encoder, images, layers, need_final="norm" in layers)
        outs["norm"] = final
        return outs

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images, None)

    def key_maps(self) -> list[KeyMap]:
        return [rules.mm_simmim(), rules.timm_swin_encoder(), rules.identity()]

    def resize_tensor(self, key: str, tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
        if key.endswith("relative_position_bias_table"):
            return resize_swin_table(tensor, ref)
        return None
