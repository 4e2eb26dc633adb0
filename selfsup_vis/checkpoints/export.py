"""Write our models back in MMSelfSup 1.x / mmpretrain layout, or as plain timm backbone
weights; the inverse of loading (same key maps, inverse tensor transforms)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup_vis.checkpoints.loading import export_state_dict
from selfsup_vis.utils.io import write_with

LAYOUTS = ("mmpretrain", "timm")


def backbone_module(model: nn.Module) -> nn.Module:
    """The timm backbone inside one of our models (``encoder``, ``backbone`` or ``model``)."""
    for name in ("encoder", "backbone", "model"):
        m = getattr(model, name, None)
        if isinstance(m, nn.Module):
            return m
    raise ValueError(f"{type(model).__name__} has no encoder/backbone/model attribute")


def to_mmpretrain(model: nn.Module) -> dict[str, Any]:
    """``{'meta': ..., 'state_dict': ...}`` with the algorithm prefixes of mmpretrain 1.x."""
    km = model.key_maps()[0]
    sd = export_state_dict(model, km)
    meta = {"exported_by": "selfsup_vis", "layout": km.name,
            "model": getattr(model, "model_name", type(model).__name__)}
    return {"meta": meta, "state_dict": sd}


def to_timm_backbone(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's own (timm-named) state dict, loadable by ``timm.create_model``."""
    return {k: v.detach().contiguous() for k, v in backbone_module(model).state_dict().items()}


def export_checkpoint(model: nn.Module, layout: str = "mmpretrain") -> dict[str, Any]:
    if layout == "mmpretrain":
        return to_mmpretrain(model)
    if layout == "timm":
        return to_timm_backbone(model)
    raise ValueError(f"unknown export layout {layout!r}; expected one of {LAYOUTS}")


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save``, atomically (the project's one atomic writer)."""
    return write_with(path, lambda tmp: torch.save(obj, tmp))
