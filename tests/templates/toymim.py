"""ToyMIM: the template of a masked-image family, in ONE module (class + schema). A new family
in the package splits it in two: the schema goes to selfsup_vis/config/model.py (torch-free, so
``--help`` needs no torch), the class to selfsup_vis/models/<family>.py. tests/test_families.py
copies this file into a temporary package and runs task=reconstruct and task=pretrain with it.

The model: a patch embedding, masked patches replaced by a learned token, a 3x3 conv mixing
neighbours and a 1x1 conv predicting each patch's pixels; MSE on the masked patches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.model import ModelConfig
from selfsup_vis.config.schemas import Pipeline
from selfsup_vis.data.masks import RandomMaskGenerator
from selfsup_vis.models.base import NOT_HPARAMS
from selfsup_vis.models.mae import patch_mask_to_pixels, patchify, unpatchify
from selfsup_vis.models.masked import MaskedImageModule, MaskedReconstruction


@dataclass
class ToyMIMConfig(ModelConfig):
    family: ClassVar[str] = "toymim"  # conf/model/*.yaml: defaults: [/schema/model/toymim@_here_]
    _target_: str = "toyfam.toymim.ToyMIM"
    pipeline: Pipeline = Pipeline.mae  # MAE's augmentations; the masks come from this family
    patch_size: int = field(default=8, metadata={"min": 1, "divides": "img_size"})
    embed_dim: int = 32
    mask_ratio: float = field(default=0.5, metadata={"gt": 0, "lt": 1})


@takes_schema(ToyMIMConfig)
class ToyMIM(MaskedImageModule):
    """Pixel-space masked-image model whose training batches carry data-drawn masks."""

    required_prefixes = ("embed.",)
    mask_args = ("img_size", "patch_size", "mask_ratio")
    data_masks = True

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, mask_ratio: float,
                 **common: Any) -> None:
        super().__init__(img_size=img_size, **common)
        self.save_hyperparameters(ignore=NOT_HPARAMS)
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, 1, 1))
        self.mix = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.decoder = nn.Conv2d(embed_dim, patch_size**2 * 3, 1)
        self.configure_features()

    @classmethod
    def build_mask_generator(cls, args: Mapping[str, Any], mask_ratio: float | None = None
                             ) -> RandomMaskGenerator:
        ratio = args["mask_ratio"] if mask_ratio is None else mask_ratio
        return RandomMaskGenerator(int(args["img_size"]) // int(args["patch_size"]), float(ratio))

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.embed(images)
        m = mask.reshape(x.shape[0], 1, self.grid, self.grid).to(x.dtype)
        x = torch.relu(self.mix(x * (1 - m) + self.mask_token * m))
        pred = self.decoder(x).flatten(2).transpose(1, 2)  # (B, L, p*p*3), patchify's layout
        target = patchify(images, self.patch_size)
        per_patch = ((pred - target) ** 2).mean(-1)
        flat = m.flatten(1)
        return {"pred": pred, "target": target, "per_patch": per_patch,
                "loss": (per_patch * flat).sum() / flat.sum().clamp(min=1)}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> MaskedReconstruction:
        if mask is None:
            mask = self.make_mask(images.shape[0], generator)
        mask = mask.reshape(images.shape[0], self.grid, self.grid).long().to(images.device)
        out = self(images, mask)
        rec = unpatchify(out["pred"], self.patch_size)
        pix = patch_mask_to_pixels(mask, self.grid, self.patch_size)
        return MaskedReconstruction(
            space="pixels", mask=mask, mask_pixels=pix, pred=out["pred"], target=out["target"],
            loss=out["loss"], per_patch_error=out["per_patch"], error_kind="pixel_mse",
            original=self.denormalize(images), reconstruction=rec,
            panels=self.pixel_panels(images, rec, pix))

    def available_layers(self) -> list[str]:
        return ["embed", "mix"]

    def _layer_outputs(self, images: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        x = self.embed(images)
        return {"embed": x, "mix": torch.relu(self.mix(x))}

    def key_maps(self) -> list[KeyMap]:
        return [rules.identity()]
