"""MoCo v3 (facebookresearch/moco-v3) training checkpoint ``{'state_dict': DDP(MoCo_ViT)}``:
the base encoder without its projector ``head`` (what main_lincls.py / convert_to_deit.py
keep); the momentum encoder on request (``model.checkpoint_key=momentum_encoder``)."""

from __future__ import annotations

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section

MOCOV3 = CheckpointFormat(
    name="mocov3", family="mocov3",
    description="MoCo v3 training checkpoint {'epoch', 'arch', 'state_dict', 'optimizer', 'scaler'} (vit-*-300ep.pth.tar)",
    sections=(Section("state_dict", "module.base_encoder.", "base encoder", "base_encoder"),
              Section("state_dict", "module.momentum_encoder.", "momentum encoder", "momentum_encoder")),
    required=("cls_token", "pos_embed", "blocks.0.attn.qkv.weight"), needs_top=("state_dict",),
    rules=[("", "encoder.")],
    ignore=[("head.", "MoCo v3 projector head (Linear-BN-ReLU x3), not a backbone part")],
)

FORMATS = (MOCOV3,)
