"""The key maps of every supported checkpoint layout, as data (see keymap.py for syntax).

"theirs" is the checkpoint (MMSelfSup 1.x / mmpretrain 1.x, official MAE / MoCo, timm),
"ours" is the state dict of the selfsup_vis LightningModule (timm naming inside).
"""

from __future__ import annotations

import torch

from selfsup_vis.checkpoints.keymap import KeyMap, Rule, prefixed

# --- ViT (MAEViT / MaskFeatViT / VisionTransformer) -> timm VisionTransformer -------------
MM_VIT_BLOCK: list[Rule] = [
    ("ln1.", "norm1."),
    ("ln2.", "norm2."),
    ("attn.qkv.", "attn.qkv."),
    ("attn.proj.", "attn.proj."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
]
MM_VIT: list[Rule] = [
    ("cls_token", "cls_token"),
    ("pos_embed", "pos_embed"),
    ("patch_embed.projection.", "patch_embed.proj."),
    *prefixed(MM_VIT_BLOCK, "layers.{i}.", "blocks.{i}."),
    ("ln1.", "norm."),  # final norm (final_norm=True)
    ("ln2.", "fc_norm."),  # out_type='avg_featmap' norm on the patch-token mean
]

# --- MAE decoder (MAEPretrainDecoder) -----------------------------------------------------
MM_MAE_DECODER: list[Rule] = [
    ("decoder_embed.", "embed."),
    ("mask_token", "mask_token"),
    ("decoder_pos_embed", "pos_embed"),
    *prefixed(MM_VIT_BLOCK, "decoder_blocks.{i}.", "blocks.{i}."),
    ("ln1.", "norm."),
    ("decoder_pred.", "pred."),
]
OFFICIAL_MAE_DECODER: list[Rule] = [
    ("decoder_embed.", "decoder.embed."),
    ("mask_token", "decoder.mask_token"),
    ("decoder_pos_embed", "decoder.pos_embed"),
    ("decoder_blocks.", "decoder.blocks."),
    ("decoder_norm.", "decoder.norm."),
    ("decoder_pred.", "decoder.pred."),
]

# --- Swin (SimMIMSwinTransformer / SwinTransformer) -> timm SwinTransformer -------------------
MM_SWIN_BLOCK: list[Rule] = [
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("attn.w_msa.qkv.", "attn.qkv."),
    ("attn.w_msa.proj.", "attn.proj."),
    ("attn.w_msa.relative_position_bias_table", "attn.relative_position_bias_table"),
    # a saved buffer in mmpretrain, recomputed (non-persistent) in timm: checked, not loaded
    ("attn.w_msa.relative_position_index", "attn.relative_position_index"),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
]
MM_SWIN: list[Rule] = [
    ("patch_embed.projection.", "patch_embed.proj."),
    ("patch_embed.norm.", "patch_embed.norm."),
    *prefixed(MM_SWIN_BLOCK, "stages.{s}.blocks.{b}.", "layers.{s}.blocks.{b}."),
    # downsample sits at the END of stage S in mmpretrain, at the START of S+1 in timm
    ("stages.{s}.downsample.", "layers.{s+1}.downsample."),
    ("norm3.", "norm."),
    ("norm.", "norm."),  # mmcls < 0.x "version < 2" name of the final norm
]
SWIN_IGNORE = [("stages.{s}.blocks.{b}.attn_mask", "shift-window mask, recomputed by timm")]


def _merge_perm(four_c: int) -> torch.Tensor:
    """Index p with timm[t] = mm[p[t]] for the 4C merged channels of PatchMerging.

    mmcv (nn.Unfold) orders merged channels as ``c*4 + 2*dy + dx``; timm as
    ``(2*dx + dy)*C + c`` (dy/dx: row/column offset in the 2x2 window).
    """
    c = four_c // 4
    t = torch.arange(four_c)
    k, ch = t // c, t % c
    dx, dy = k // 2, k % 2
    return ch * 4 + 2 * dy + dx


def _perm_last(t: torch.Tensor) -> torch.Tensor:
    return t.index_select(t.dim() - 1, _merge_perm(t.shape[-1]))


def _unperm_last(t: torch.Tensor) -> torch.Tensor:
    inv = torch.argsort(_merge_perm(t.shape[-1]))
    return t.index_select(t.dim() - 1, inv)


SWIN_TRANSFORMS = [
    (r"layers\.\d+\.downsample\.(norm\.(weight|bias)|reduction\.weight)$", _perm_last, _unperm_last),
]

# --- ResNet: mmpretrain / torchvision names are timm names ---------------------------------
RESNET: list[Rule] = [("", "")]
MOCO_NECK: list[Rule] = [("mlp.0.", "mlp.0."), ("mlp.2.", "mlp.2.")]


# --- Algorithm layouts ---------------------------------------------------------------------
def mm_mae() -> KeyMap:
    return KeyMap("mmpretrain MAE", prefixed(MM_VIT, "backbone.", "encoder.")
                  + prefixed(MM_MAE_DECODER, "neck.", "decoder."))


def official_mae() -> KeyMap:
    """facebookresearch/mae (`{'model': ...}`) and plain timm ViT state dicts."""
    return KeyMap("official MAE / timm ViT", OFFICIAL_MAE_DECODER + [("", "encoder.")])


def mm_maskfeat() -> KeyMap:
    return KeyMap("mmpretrain MaskFeat", [
        ("backbone.mask_token", "mask_token"),
        *prefixed(MM_VIT, "backbone.", "encoder."),
        ("neck.fc.", "predictor."),
        ("target_generator.", "hog."),
    ])


def timm_vit_encoder(name: str = "timm ViT") -> KeyMap:
    return KeyMap(name, [("", "encoder.")])


def mm_simmim() -> KeyMap:
    return KeyMap("mmpretrain SimMIM", [
        ("backbone.mask_token", "mask_token"),
        *prefixed(MM_SWIN, "backbone.", "encoder."),
        ("neck.decoder.0.", "decoder.0."),
    ], transforms=list(SWIN_TRANSFORMS), ignore=prefixed_ignore(SWIN_IGNORE, "backbone."))


def timm_swin_encoder() -> KeyMap:
    return KeyMap("timm Swin", [("", "encoder.")])


def prefixed_ignore(items: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    return [(prefix + a, why) for a, why in items]


def mm_moco() -> KeyMap:
    return KeyMap("mmpretrain MoCo", [
        ("queue", "queue"),
        ("queue_ptr", "queue_ptr"),
        ("encoder_k.steps", "momentum_steps"),
        ("encoder_k.module.0.", "momentum_backbone."),
        *prefixed(MOCO_NECK, "encoder_k.module.1.", "momentum_neck."),
        ("backbone.", "backbone."),
        *prefixed(MOCO_NECK, "neck.", "neck."),
    ])


def official_moco() -> KeyMap:
    """facebookresearch/moco v2 (`module.encoder_q.*`, MLP head as `fc.0` / `fc.2`)."""
    return KeyMap("official MoCo v2", [
        ("module.queue", "queue"),
        ("module.queue_ptr", "queue_ptr"),
        ("module.encoder_q.fc.0.", "neck.mlp.0."),
        ("module.encoder_q.fc.2.", "neck.mlp.2."),
        ("module.encoder_q.", "backbone."),
        ("module.encoder_k.fc.0.", "momentum_neck.mlp.0."),
        ("module.encoder_k.fc.2.", "momentum_neck.mlp.2."),
        ("module.encoder_k.", "momentum_backbone."),
    ])


def timm_resnet_backbone() -> KeyMap:
    return KeyMap("timm / torchvision ResNet", [("", "backbone.")],
                  ignore=[("fc.", "classifier head of a supervised ResNet (not used)")])


def mm_classifier(backbone: str, head: str = "linear") -> KeyMap:
    """ImageClassifier: backbone + optional ClsBatchNormNeck + LinearClsHead (``head.fc``) or
    VisionTransformerClsHead (``head.layers.head`` [+ ``head.layers.pre_logits``])."""
    inner = {"vit": MM_VIT, "swin": MM_SWIN, "resnet": RESNET}[backbone]
    heads: list[Rule] = [("head.fc.", "head.fc.")] if head == "linear" else [
        ("head.layers.pre_logits.", "head.pre_logits."), ("head.layers.head.", "head.fc.")]
    km = KeyMap(f"mmpretrain ImageClassifier ({backbone}, {head} head)", [
        *prefixed(inner, "backbone.", "backbone."),
        ("neck.bn.", "neck.bn."),
        *heads,
    ])
    if backbone == "swin":
        km = KeyMap(km.name, km.rules, transforms=list(SWIN_TRANSFORMS),
                    ignore=prefixed_ignore(SWIN_IGNORE, "backbone."))
    return km


def timm_classifier(backbone: str) -> KeyMap:
    """A plain timm classifier state dict (backbone + its own head) into MMClassifier."""
    head = {"vit": "head.", "swin": "head.fc.", "resnet": "fc."}[backbone]
    return KeyMap(f"timm classifier ({backbone})", [(head, "head.fc."), ("", "backbone.")])


def identity(name: str = "selfsup_vis / Lightning") -> KeyMap:
    return KeyMap(name, [("", "")])
