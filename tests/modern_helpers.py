"""Shared helpers of the tests/test_modern_*.py files: where the modern fixtures are
(``$SELFSUP_VIS_MODERN_FIXTURES``, default ``<shared>/fixtures/modern``), and the model built
from a fixture's JSON ``config`` (never from hard-coded sizes, so other fixture sets of the
same format run the same tests)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from selfsup_vis.models.pretrained_vit import PretrainedViT
from tests.conftest import SHARED

FIXTURES = Path(os.environ.get("SELFSUP_VIS_MODERN_FIXTURES", SHARED / "fixtures" / "modern"))
needs_modern = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(),
                                  reason=f"modern fixtures not found at {FIXTURES}")
TOL = 1e-4


@cache
def meta(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@cache
def io(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)


def checkpoint_path(name: str) -> Path:
    folder = FIXTURES / name
    return folder if folder.is_dir() else FIXTURES / f"{name}.pth"


def _swiglu_hidden(c: int, ratio: float = 4.0) -> int:
    return (int(int(c * ratio) * 2 / 3) + 7) // 8 * 8


def vit_kwargs(name: str) -> dict[str, Any]:
    """PretrainedViT constructor arguments from the fixture's official constructor config."""
    m = meta(name)
    c = m["config"]
    fam = m["family"]
    common = {"name": name, "img_size": c.get("img_size"), "patch_size": c.get("patch_size"),
              "embed_dim": c.get("embed_dim"), "depth": c.get("depth"), "num_heads": c.get("num_heads")}
    if fam == "dino":
        return {**common, "release": "dino", "interpolate_offset": 0.1}
    if fam == "dinov2":
        swiglu = str(c["ffn_layer"]).startswith("swiglu")
        return {**common, "release": "dinov2", "layerscale": 1.0, "mask_token": True,
                "ffn_layer": "swiglu" if swiglu else "mlp",
                "mlp_hidden": _swiglu_hidden(c["embed_dim"]) if swiglu else None,
                "num_register_tokens": c["num_register_tokens"],
                "interpolate_offset": c["interpolate_offset"],
                "interpolate_antialias": c["interpolate_antialias"]}
    if fam == "dinov3":
        return {**common, "release": "dinov3", "layerscale": 1e-5, "norm_eps": 1e-5, "mask_token": True,
                "num_register_tokens": c["n_storage_tokens"],
                "mlp_hidden": int(c["embed_dim"] * c["ffn_ratio"])}
    if fam == "mae":
        return {**common, "release": "mae"}
    if fam == "moco-v3":
        return {**common, "release": "mocov3"}
    if fam == "ijepa":
        return {**common, "release": "ijepa", "class_token": False}
    if fam == "transformers":  # architecture from the folder's config.json
        return {"name": name, "path": str(checkpoint_path(name))}
    raise KeyError(fam)


def build(name: str, **overrides: Any):
    kw = {**vit_kwargs(name), **overrides}
    model = PretrainedViT(**kw)
    model.load_weights(str(checkpoint_path(name)))
    return model.eval()


def hf_config(name: str) -> dict[str, Any]:
    """The config.json of a Hugging Face fixture folder (the fixture JSON omits some keys)."""
    return json.loads((checkpoint_path(name) / "config.json").read_text())


def mae_kwargs(name: str) -> dict[str, Any]:
    """models/mae.py MAE constructor arguments from an official MAE fixture config."""
    c = meta(name)["config"]
    if "hidden_size" in c:  # Hugging Face ViTMAEConfig
        return {"name": name, "img_size": c["image_size"], "patch_size": c["patch_size"],
                "embed_dim": c["hidden_size"], "depth": c["num_hidden_layers"],
                "num_heads": c["num_attention_heads"], "decoder_embed_dim": c["decoder_hidden_size"],
                "decoder_depth": c["decoder_num_hidden_layers"],
                "decoder_num_heads": c["decoder_num_attention_heads"], "norm_pix": c["norm_pix_loss"],
                "mask_ratio": c["mask_ratio"], "norm_eps": float(hf_config(name)["layer_norm_eps"])}
    return {"name": name, "img_size": c["img_size"], "patch_size": c["patch_size"],
            "embed_dim": c["embed_dim"], "depth": c["depth"], "num_heads": c["num_heads"],
            "decoder_embed_dim": c["decoder_embed_dim"], "decoder_depth": c["decoder_depth"],
            "decoder_num_heads": c["decoder_num_heads"], "norm_pix": c["norm_pix_loss"],
            "mask_ratio": meta(name)["fixture_params"]["mask_ratio"]}


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert tuple(a.shape) == tuple(b.shape), f"shape {tuple(a.shape)} vs reference {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
