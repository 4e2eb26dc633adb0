"""DINOv2 (facebookresearch/dinov2) hub weights, with or without registers, MLP or SwiGLU
(ViT-g ``mlp.w12`` / ``mlp.w3`` = timm ``SwiGLUPacked`` ``fc1`` / ``fc2``)."""

from __future__ import annotations

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section

DINOV2 = CheckpointFormat(
    name="dinov2", family="dinov2",
    description="DINOv2 hub weights (plain state dict, dinov2_vit*14[_reg4]_pretrain.pth; block_chunks=0)",
    sections=(Section(None, "", "backbone", "backbone"),),
    required=("cls_token", "pos_embed", "mask_token", "blocks.0.ls1.gamma"),
    forbidden=("storage_tokens", "rope_embed.periods", "blocks.0.0.norm1.weight"),
    rules=[
        ("register_tokens", "register_tokens"),
        ("mask_token", "mask_token"),
        ("blocks.{i}.mlp.w12.", "encoder.blocks.{i}.mlp.fc1."),
        ("blocks.{i}.mlp.w3.", "encoder.blocks.{i}.mlp.fc2."),
        ("", "encoder."),
    ],
)

FORMATS = (DINOV2,)
