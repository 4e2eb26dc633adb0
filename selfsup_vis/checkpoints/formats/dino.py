"""DINO v1 (facebookresearch/dino): hub weights (a plain ViT state dict) and training
checkpoints (``student`` DDP-wrapped, ``teacher`` not; the teacher backbone is what DINO's
evaluation uses)."""

from __future__ import annotations

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section

VIT_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight")
NOT_V1 = ("blocks.0.ls1.gamma", "mask_token", "storage_tokens", "decoder_embed.weight", "register_tokens")

DINO_HUB = CheckpointFormat(
    name="dino", family="dino",
    description="DINO hub weights (plain ViT state dict, e.g. dino_deitsmall16_pretrain.pth)",
    sections=(Section(None, "", "backbone", "backbone"),),
    required=VIT_KEYS, forbidden=NOT_V1,
    rules=[("", "encoder.")],
    ignore=[("head.", "classification head (hub weights have none)")],
)

DINO_TRAIN = CheckpointFormat(
    name="dino_train", family="dino",
    description="DINO training checkpoint {'student', 'teacher', 'optimizer', 'args', 'dino_loss', ...}",
    sections=(Section("teacher", "backbone.", "teacher backbone", "teacher"),
              Section("student", "module.backbone.", "student backbone", "student")),
    required=VIT_KEYS, forbidden=NOT_V1, needs_top=("teacher", "student"),
    rules=[("", "encoder.")],
)

FORMATS = (DINO_TRAIN, DINO_HUB)
