"""DINOv3 (facebookresearch/dinov3) ViT weights on timm ``Eva``: storage tokens = ``reg_token``,
LayerScale ``ls{1,2}.gamma`` = ``gamma_{1,2}``, SwiGLU ``w1/w2/w3`` = ``fc1_g/fc1_x/fc2``. The
fused ``qkv.bias`` is split into Eva's q / k / v biases with ``bias_mask`` applied (the released
models zero the k bias through it), and the checkpoint's ``rope_embed.periods`` replace timm's
recomputed ones (the released files hold bf16-rounded periods)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section


def split_qkv_bias(state: dict[str, torch.Tensor], model: nn.Module, notes: list[tuple[str, str]]
                   ) -> dict[str, torch.Tensor]:
    out = dict(state)
    periods = out.pop("rope_embed.periods", None)
    enc = model.encoder
    if periods is not None:
        rope = enc.rope
        if tuple(periods.shape) != tuple(rope.periods.shape):
            raise ValueError(f"rope_embed.periods {list(periods.shape)} vs model {list(rope.periods.shape)} "
                             f"(head_dim / 4): wrong num_heads or embed_dim")
        with torch.no_grad():
            rope.periods.copy_(periods.float())
        notes.append(("rope_embed.periods", "loaded into the RoPE buffer (encoder.rope.periods)"))
    masked_k = 0
    for key in [k for k in state if k.endswith("attn.qkv.bias")]:
        bias = out.pop(key)
        mask = out.pop(key + "_mask", None)
        if mask is not None:
            bias = bias * mask.to(bias.dtype)
        q, k, v = bias.chunk(3)
        base = key[: -len("qkv.bias")]
        out[base + "q_bias"], out[base + "v_bias"] = q, v
        blk = int(key.split(".")[1])
        attn = enc.blocks[blk].attn
        if attn.k_bias is not None:
            with torch.no_grad():
                attn.k_bias.copy_(k)
        if mask is not None and mask.device.type != "meta":  # meta: shape checks only
            masked_k += int(not bool(mask.chunk(3)[1].any()))
    if masked_k:
        notes.append(("blocks.*.attn.qkv.bias_mask",
                      f"applied: k bias zeroed in {masked_k} block(s) (mask_k_bias, as the reference)"))
    return out


DINOV3 = CheckpointFormat(
    name="dinov3", family="dinov3",
    description="DINOv3 ViT weights (plain state dict, dinov3_vit*16_pretrain_*.pth)",
    sections=(Section(None, "", "backbone", "backbone"),),
    required=("cls_token", "storage_tokens", "rope_embed.periods"),
    forbidden=("blocks.0.attn.wq.weight",),
    rules=[
        ("cls_token", "encoder.cls_token"),
        ("storage_tokens", "encoder.reg_token"),
        ("mask_token", "mask_token"),
        ("blocks.{i}.ls1.gamma", "encoder.blocks.{i}.gamma_1"),
        ("blocks.{i}.ls2.gamma", "encoder.blocks.{i}.gamma_2"),
        ("blocks.{i}.mlp.w1.", "encoder.blocks.{i}.mlp.fc1_g."),
        ("blocks.{i}.mlp.w2.", "encoder.blocks.{i}.mlp.fc1_x."),
        ("blocks.{i}.mlp.w3.", "encoder.blocks.{i}.mlp.fc2."),
        ("blocks.", "encoder.blocks."),
        ("patch_embed.", "encoder.patch_embed."),
        ("norm.", "encoder.norm."),
    ],
    ignore=[("local_cls_norm.", "untied local-crop cls norm (training only, SAT-493M / 7B)")],
    prepare=split_qkv_bias,
)

FORMATS = (DINOV3,)
