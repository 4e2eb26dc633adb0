"""I-JEPA (facebookresearch/ijepa) training checkpoint: ``target_encoder`` (what the paper
evaluates) or ``encoder``, DDP prefix ``module.``; no cls token."""

from __future__ import annotations

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section

IJEPA = CheckpointFormat(
    name="ijepa", family="ijepa",
    description="I-JEPA training checkpoint {'encoder', 'predictor', 'target_encoder', 'opt', ...}",
    sections=(Section("target_encoder", "module.", "target encoder", "target_encoder"),
              Section("encoder", "module.", "context encoder", "encoder")),
    required=("pos_embed", "blocks.0.attn.qkv.weight"), forbidden=("cls_token",),
    needs_top=("target_encoder", "predictor"),
    rules=[("", "encoder.")],
)

FORMATS = (IJEPA,)
