"""timm backbones built with the exact settings of the MMSelfSup / mmpretrain models, and named
intermediate outputs taken the timm way (``forward_intermediates``) with mmpretrain's layer
meanings (:data:`LAYER_MEANINGS`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.swin_transformer import (
    SwinTransformer,
    SwinTransformerBlock,
    window_partition,
    window_reverse,
)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

# ----------------------------------------------------------------------------------- ViT
MM_VIT_ARCHS = {  # mmpretrain arch names -> (embed_dim, depth, heads, ffn)
    "b": (768, 12, 12, 3072), "base": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096), "large": (1024, 24, 16, 4096),
    "h": (1280, 32, 16, 5120), "huge": (1280, 32, 16, 5120),
}


def build_vit(img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
              num_heads: int = 12, mlp_ratio: float = 4.0, out_type: str = "cls_token",
              final_norm: bool = True, drop_path_rate: float = 0.0,
              norm_eps: float = 1e-6) -> VisionTransformer:
    """mmpretrain VisionTransformer as timm: LN eps ``norm_eps`` (mmpretrain / official 1e-6;
    Hugging Face ViTMAE 1e-12), exact GELU, qkv bias, cls token.

    ``out_type='avg_featmap'`` with ``final_norm=False`` is the MAE fine-tune layout (an
    ``ln2`` = timm ``fc_norm`` on the mean of the patch tokens)."""
    if out_type not in ("cls_token", "avg_featmap", "raw", "featmap"):
        raise ValueError(f"ViT out_type={out_type!r}: expected cls_token or avg_featmap")
    avg = out_type == "avg_featmap"
    vit = VisionTransformer(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, num_classes=0,
        global_pool="avg" if avg else "token", drop_path_rate=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=norm_eps))
    # mmpretrain: ln1 (final norm on all tokens) iff final_norm; ln2 (on the patch mean) iff
    # avg_featmap -- independently, which timm's constructor cannot express
    vit.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
    vit.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if avg else nn.Identity()
    return vit


def vit_embed(vit: VisionTransformer, images: torch.Tensor, mask: torch.Tensor | None = None,
              mask_token: torch.Tensor | None = None) -> torch.Tensor:
    """Patch-embed, optionally replace masked tokens (MaskFeat), prepend cls, add pos-embed."""
    x = vit.patch_embed(images)
    if mask is not None:
        w = mask.flatten(1).unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + mask_token.expand(x.shape[0], x.shape[1], -1) * w
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def vit_blocks(vit: VisionTransformer, x: torch.Tensor, keep: set[str] | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run all blocks; return the final-norm output and the outputs named ``block{i}``."""
    outs: dict[str, torch.Tensor] = {}
    for i, blk in enumerate(vit.blocks):
        x = blk(x)
        if keep is None or f"block{i}" in keep:
            outs[f"block{i}"] = x
    return vit.norm(x), outs


def resize_vit_pos_embed(tensor: torch.Tensor, ref: torch.Tensor, num_prefix: int = 1
                         ) -> torch.Tensor | None:
    if tensor.dim() != 3 or tensor.shape[-1] != ref.shape[-1]:
        return None
    n = ref.shape[1] - num_prefix
    side = int(round(n ** 0.5))
    if side * side != n:
        return None
    return resample_abs_pos_embed(tensor.float(), [side, side], num_prefix_tokens=num_prefix).to(ref.dtype)


def sincos_pos_embed(embed_dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE), (1, [1+]grid*grid, C)."""
    gh, gw = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="xy")

    def one(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one(embed_dim // 2, gh), one(embed_dim // 2, gw)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float().unsqueeze(0)


# ----------------------------------------------------------------------------------- Swin
MM_SWIN_ARCHS = {  # mmpretrain arch names -> (embed_dim, depths, heads)
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)), "large": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}


class PadFirstSwinBlock(SwinTransformerBlock):
    """mmpretrain ``pad_small_map=True`` semantics: pad the map to whole windows FIRST, then
    shift (timm shifts and then pads), so padded zeros take part in shifted windows exactly
    as in mmpretrain. Window and shift are never shrunk (``always_partition``)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = x.shape[1], x.shape[2]
        has_shift = any(self.shift_size)
        if has_shift:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)
        mask = self.get_attn_mask(x) if getattr(self, "dynamic_mask", False) else self.attn_mask
        attn = self.attn(windows, mask=mask).view(-1, wh, ww, C)
        x = window_reverse(attn, self.window_size, Hp, Wp)
        if has_shift:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


def build_swin(img_size: int = 224, patch_size: int = 4, embed_dim: int = 128,
               depths: Sequence[int] = (2, 2, 18, 2), num_heads: Sequence[int] = (4, 8, 16, 32),
               window_size: int = 7, mlp_ratio: float = 4.0, pad_small_map: bool = False,
               drop_path_rate: float = 0.0) -> SwinTransformer:
    """mmpretrain SwinTransformer as timm (LN eps 1e-5). With ``pad_small_map=False`` a stage
    whose map is not larger than the window uses window = map and no shift (timm's default);
    with ``True`` the mmpretrain padding behaviour (see :class:`PadFirstSwinBlock`)."""
    swin = SwinTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                           depths=tuple(depths), num_heads=tuple(num_heads), window_size=window_size,
                           mlp_ratio=mlp_ratio, num_classes=0, drop_path_rate=drop_path_rate,
                           always_partition=pad_small_map)
    if pad_small_map:
        for stage in swin.layers:
            for blk in stage.blocks:
                blk.__class__ = PadFirstSwinBlock
    return swin


def swin_stages(swin: SwinTransformer, x: torch.Tensor, keep: set[str] | None = None,
                mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """NHWC Swin forward; returns the final-norm map as NCHW and named NCHW stage outputs
    (``stage{i}`` = output of stage i before the next downsample, mmpretrain's indexing)."""
    x = swin.patch_embed(x)  # (B, H, W, C), patch-embed LayerNorm included
    if mask is not None:
        w = mask.reshape(x.shape[0], x.shape[1], x.shape[2], 1).to(x.dtype)
        x = x * (1.0 - w) + mask_token.reshape(1, 1, 1, -1) * w
    if getattr(swin, "absolute_pos_embed", None) is not None:
        x = x + swin.absolute_pos_embed
    outs: dict[str, torch.Tensor] = {}
    for i, stage in enumerate(swin.layers):
        x = stage(x)
        if keep is None or f"stage{i}" in keep:
            outs[f"stage{i}"] = x.permute(0, 3, 1, 2)
    return swin.norm(x).permute(0, 3, 1, 2).contiguous(), outs


def resize_swin_table(tensor: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
    if tensor.dim() != 2 or tensor.shape[1] != ref.shape[1]:
        return None
    side = int(round(ref.shape[0] ** 0.5))
    window = (side + 1) // 2
    return resize_rel_pos_bias_table(tensor.float(), (window, window), tuple(ref.shape)).to(ref.dtype)


# ----------------------------------------------------------------------------------- ResNet
RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
                 152: (Bottleneck, (3, 8, 36, 3))}


def build_resnet(depth: int = 50, stem_channels: int = 64, base_channels: int = 64,
                 layers: Sequence[int] | None = None, zero_init_residual: bool = False) -> ResNet:
    """mmpretrain ResNet (style 'pytorch': stride on the 3x3 conv) as timm ResNet."""
    block, default_layers = RESNET_DEPTHS[int(depth)]
    ch = tuple(base_channels * 2 ** i for i in range(4))
    net = ResNet(block=block, layers=tuple(layers or default_layers), channels=ch,
                 num_classes=0, zero_init_last=zero_init_residual)
    if stem_channels != 64:  # timm fixes the plain 7x7 stem at 64 channels: rewire it
        _set_stem_width(net, stem_channels)
    return net


def _conv_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _set_stem_width(net: ResNet, width: int) -> None:
    net.conv1 = _conv_init(nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False))
    net.bn1 = nn.BatchNorm2d(width)
    first = net.layer1[0]
    old = first.conv1
    first.conv1 = _conv_init(nn.Conv2d(width, old.out_channels, kernel_size=old.kernel_size,
                                       stride=old.stride, padding=old.padding, bias=False))
    out_ch = first.bn3.num_features if hasattr(first, "bn3") else first.bn2.num_features
    if first.downsample is not None:
        ds = first.downsample[0]
        first.downsample[0] = _conv_init(nn.Conv2d(width, ds.out_channels, 1, stride=ds.stride, bias=False))
    elif width != out_ch:
        first.downsample = nn.Sequential(_conv_init(nn.Conv2d(width, out_ch, 1, bias=False)),
                                         nn.BatchNorm2d(out_ch))


RESNET_LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]


def resnet_stages(net: ResNet, x: torch.Tensor, keep: set[str] | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Named NCHW outputs: ``stem`` (after max-pool) and ``layer1``..``layer4``."""
    x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
    outs = {"stem": x}
    for name in RESNET_LAYERS[1:]:
        x = getattr(net, name)(x)
        outs[name] = x
    if keep is not None:
        outs = {k: v for k, v in outs.items() if k in keep}
    return x, outs


# ----------------------------------------------------------------------------------- named layers
#: what each layer name means (mmpretrain's meaning) and which timm intermediate gives it
LAYER_MEANINGS: dict[str, str] = {
    "stem": "ResNet stem after its max-pool (mmpretrain); timm intermediate 0 (module act1) + maxpool",
    "layerN": "ResNet stage N = 1..4 (timm intermediate N, module layerN)",
    "blockN": "ViT block N, all tokens (timm intermediate N of blocks.N, prefix tokens re-attached)",
    "stageN": "Swin / ConvNeXt stage N before the next downsample, NCHW (timm layers.N / stages.N)",
    "featN": "timm intermediate N of any other model (feature_info[N])",
    "norm": "ViT / Swin final norm on the last block / stage (timm's final features)",
    "neck": "MoCo v2 projection MLP on the pooled layer4",
    "feats": "mmpretrain extract_feat: pooled backbone (+ neck) fed to the classification head",
    "pre_logits": "classifier head input after its pre-logits layer",
    "logits": "class scores",
}
_TIMM_MODULE_NAMES = ((re.compile(r"act1|stem(\..*)?"), lambda m: "stem"),
                      (re.compile(r"layer(\d+)"), lambda m: f"layer{m[1]}"),
                      (re.compile(r"blocks\.(\d+)"), lambda m: f"block{m[1]}"),
                      (re.compile(r"(?:stages|layers)\.(\d+)"), lambda m: f"stage{m[1]}"))


def supports_intermediates(net: nn.Module) -> bool:
    return callable(getattr(net, "forward_intermediates", None)) and bool(getattr(net, "feature_info", None))


def timm_layer_names(net: nn.Module) -> list[str]:
    """Our name of each ``forward_intermediates`` output of a timm model (its ``feature_info``)."""
    names: list[str] = []
    for i, info in enumerate(net.feature_info):
        module = str(info["module"])
        name = f"feat{i}"
        for pattern, rename in _TIMM_MODULE_NAMES:
            if m := pattern.fullmatch(module):
                name = rename(m)
                break
        names.append(name if name not in names else f"feat{i}")
    return names


def _has_tokens(net: nn.Module) -> bool:
    return isinstance(net, VisionTransformer) or (hasattr(net, "blocks") and hasattr(net, "num_prefix_tokens")
                                                  and hasattr(net, "cls_token"))


def named_intermediates(net: nn.Module, images: torch.Tensor, wanted: set[str], need_final: bool = True
                        ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """timm's ``forward_intermediates`` under our names: ``(final, {name: output})``.

    ViTs give (B, N, C) token sequences with the prefix tokens; maps are NCHW; ``stem`` of a
    ResNet is taken after the max-pool as in mmpretrain; Swin's final output is NCHW after its
    final norm. ``final`` is None when ``need_final`` is false (the forward stops early)."""
    names = timm_layer_names(net)
    idx = [i for i, n in enumerate(names) if n in wanted] or [len(names) - 1]
    tokens = _has_tokens(net)
    kwargs: dict = {"return_prefix_tokens": True, "output_fmt": "NLC"} if tokens else {}
    final, inter = net.forward_intermediates(images, indices=idx, stop_early=not need_final, **kwargs)
    if tokens and getattr(net, "num_prefix_tokens", 0):
        inter = [torch.cat([prefix, x], dim=1) for x, prefix in inter]
    outs = {names[i]: x for i, x in zip(idx, inter) if names[i] in wanted}
    if "stem" in outs and isinstance(getattr(net, "maxpool", None), nn.Module):
        outs["stem"] = net.maxpool(outs["stem"])
    if not need_final:
        final = None
    elif isinstance(net, SwinTransformer):
        final = final.permute(0, 3, 1, 2).contiguous()
    return final, outs
