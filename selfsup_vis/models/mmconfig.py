"""Translate an mmpretrain / MMSelfSup model config (the ``model=dict(...)`` of their config
files, as stored in the fixture JSONs) into a selfsup_vis model config (``_target_`` + kwargs),
so that checkpoints of any size can be loaded without hand-written configs. The backbone helpers
live here; each family translates its own algorithm (``kwargs_from_mm`` next to its class)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfsup_vis.models.backbones import MM_SWIN_ARCHS, MM_VIT_ARCHS
from selfsup_vis.models.registry import families


def vit_kwargs(b: dict) -> dict[str, Any]:
    arch = b.get("arch", "b")
    if isinstance(arch, str):
        dim, depth, heads, ffn = MM_VIT_ARCHS[arch.lower()]
    else:
        dim, depth, heads, ffn = (arch["embed_dims"], arch["num_layers"], arch["num_heads"],
                                  arch["feedforward_channels"])
    return {"img_size": b.get("img_size", 224), "patch_size": b.get("patch_size", 16),
            "embed_dim": dim, "depth": depth, "num_heads": heads, "mlp_ratio": ffn / dim}


def swin_kwargs(b: dict) -> dict[str, Any]:
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


def resnet_kwargs(b: dict) -> dict[str, Any]:
    return {"depth": b.get("depth", 50), "stem_channels": b.get("stem_channels", 64),
            "base_channels": b.get("base_channels", 64)}


def model_config_from_mm(cfg: Mapping[str, Any], name: str = "from_mm_config") -> dict[str, Any]:
    """``cfg`` = an mmpretrain model config dict. Returns kwargs incl. ``_target_`` for
    ``hydra.utils.instantiate``: the family whose class lists ``cfg["type"]`` in its
    ``mm_types`` translates the rest (``kwargs_from_mm``)."""
    kind = cfg["type"]
    by_type = {t: fam for fam in families().values() for t in fam.cls.mm_types}
    if kind not in by_type:
        raise ValueError(f"unsupported mmpretrain model type {kind!r}; known: {sorted(by_type)}")
    fam = by_type[kind]
    return {"_target_": fam.schema._target_, "name": name, **fam.cls.kwargs_from_mm(cfg)}
