"""Translate an mmpretrain / MMSelfSup model config (the ``model=dict(...)`` of their config
files, as stored in the fixture JSONs) into a selfsup_vis model config (``_target_`` + kwargs),
so that checkpoints of any size can be loaded without hand-written configs."""

from __future__ import annotations

from typing import Any

from selfsup_vis.models.backbones import MM_SWIN_ARCHS, MM_VIT_ARCHS

_ALGOS = {"MAE": "selfsup_vis.models.mae.MAE", "SimMIM": "selfsup_vis.models.simmim.SimMIM",
          "MaskFeat": "selfsup_vis.models.maskfeat.MaskFeat", "MoCo": "selfsup_vis.models.moco.MoCoV2",
          "MoCoV2": "selfsup_vis.models.moco.MoCoV2",
          "ImageClassifier": "selfsup_vis.models.classifier.MMClassifier"}


def _vit(b: dict) -> dict[str, Any]:
    arch = b.get("arch", "b")
    if isinstance(arch, str):
        dim, depth, heads, ffn = MM_VIT_ARCHS[arch.lower()]
    else:
        dim, depth, heads, ffn = (arch["embed_dims"], arch["num_layers"], arch["num_heads"],
                                  arch["feedforward_channels"])
    return {"img_size": b.get("img_size", 224), "patch_size": b.get("patch_size", 16),
            "embed_dim": dim, "depth": depth, "num_heads": heads, "mlp_ratio": ffn / dim}


def _swin(b: dict) -> dict[str, Any]:
    arch = b.get("arch", "tiny")
    if isinstance(arch, str):
        dim, depths, heads = MM_SWIN_ARCHS[arch.lower()]
    else:
        dim, depths, heads = arch["embed_dims"], arch["depths"], arch["num_heads"]
    window = b.get("window_size", 7)
    window = b.get("stage_cfgs", {}).get("block_cfgs", {}).get("window_size", window)
    return {"img_size": b.get("img_size", 224), "patch_size": b.get("patch_size", 4),
            "embed_dim": dim, "depths": list(depths), "num_heads": list(heads),
            "window_size": window, "pad_small_map": bool(b.get("pad_small_map", False))}


def _resnet(b: dict) -> dict[str, Any]:
    return {"depth": b.get("depth", 50), "stem_channels": b.get("stem_channels", 64),
            "base_channels": b.get("base_channels", 64)}


def model_config_from_mm(cfg: dict, name: str = "from_mm_config") -> dict[str, Any]:
    """``cfg`` = an mmpretrain model config dict (type MAE / SimMIM / MaskFeat / MoCo /
    ImageClassifier). Returns kwargs incl. ``_target_`` for ``hydra.utils.instantiate``."""
    kind = cfg["type"]
    if kind not in _ALGOS:
        raise ValueError(f"unsupported mmpretrain model type {kind!r}; known: {sorted(_ALGOS)}")
    b, neck, head = cfg.get("backbone", {}), cfg.get("neck") or {}, cfg.get("head") or {}
    out: dict[str, Any] = {"_target_": _ALGOS[kind], "name": name}
    if kind == "MAE":
        out.update(_vit(b), mask_ratio=b.get("mask_ratio", 0.75),
                   decoder_embed_dim=neck.get("decoder_embed_dim", 512),
                   decoder_depth=neck.get("decoder_depth", 8),
                   decoder_num_heads=neck.get("decoder_num_heads", 16),
                   decoder_mlp_ratio=neck.get("mlp_ratio", 4.0),
                   norm_pix=head.get("norm_pix", False))
    elif kind == "MaskFeat":
        tg = cfg.get("target_generator", {})
        out.update(_vit(b), hog_nbins=tg.get("nbins", 9), hog_pool=tg.get("pool", 8),
                   hog_gaussian_window=tg.get("gaussian_window", 16))
    elif kind == "SimMIM":
        out.update(_swin(b), encoder_stride=neck.get("encoder_stride", 32))
    elif kind in ("MoCo", "MoCoV2"):
        out.update(_resnet(b), queue_len=cfg.get("queue_len", 65536), feat_dim=cfg.get("feat_dim", 128),
                   momentum=cfg.get("momentum", 0.001), temperature=head.get("temperature", 0.2),
                   neck_hidden=neck.get("hid_channels", 2048))
    else:
        btype = b["type"]
        if btype in ("VisionTransformer", "MAEViT", "MaskFeatViT"):
            arch = _vit(b)
            arch.update(out_type=b.get("out_type", "cls_token"), final_norm=b.get("final_norm", True))
            out["backbone"] = "vit"
        elif btype in ("SwinTransformer", "SimMIMSwinTransformer"):
            arch, out["backbone"] = _swin(b), "swin"
        elif btype == "ResNet":
            arch, out["backbone"] = _resnet(b), "resnet"
        else:
            raise ValueError(f"unsupported ImageClassifier backbone {btype!r}")
        out["img_size"] = arch.pop("img_size", 224)
        out["arch"] = arch
        ntype = neck.get("type") if neck else None
        out["neck"] = {"GlobalAveragePooling": "gap", "ClsBatchNormNeck": "cls_bn", None: "none"}[ntype]
        out["head"] = "vit" if head.get("type") == "VisionTransformerClsHead" else "linear"
        out["hidden_dim"] = head.get("hidden_dim")
        out["num_classes"] = head.get("num_classes", 1000)
    return out
