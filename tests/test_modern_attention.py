"""Attention of the released-format models: the probabilities shown equal the explicit
softmax(q·kᵀ·scale) the official code stores, with timm's fused attention on and off (and with
RoPE); the block really used them; register / storage tokens never reach a patch grid; the
DINO 60 %-mass per-head maps keep the smallest set of patches holding 60 % of the mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup_vis.attention.compute import MapSpec, compute_maps
from selfsup_vis.attention.prefix import head_overlay_figure, mass_threshold
from tests.modern_helpers import TOL, build, io, max_err, needs_modern

pytestmark = needs_modern
REG_MODELS = ["dinov2_reg", "dinov3", "hf_dinov2_reg", "hf_dinov3"]


def _set_fused(model, flag: bool) -> None:
    for blk in model.encoder.blocks:
        blk.attn.fused_attn = flag


def _probs_key(name: str) -> str:
    return "last_block_attn_probs" if not name.startswith("hf_") else "attentions"


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", ["dino_hub", "dinov2", "dinov2_reg", "dinov3"])
@torch.no_grad()
def test_attention_equals_explicit_softmax_fused_or_not(name: str, fused: bool) -> None:
    model = build(name)
    _set_fused(model, fused)
    d = io(name)
    for tag in ("native", "other"):
        x = d["inputs"][tag]
        probs, _ = model.attention_probs(x, [-1])
        key = f"{tag}.last_selfattention" if name == "dino_hub" else f"{tag}.last_block_attn_probs"
        assert max_err(probs[model.depth - 1], d["outputs"][key]) <= TOL
        # the tokens computed through timm's (fused or not) blocks still match the reference
        tokens = model.forward_features(x)
        ref = (d["outputs"][f"{tag}.tokens"] if name == "dino_hub"
               else d["outputs"][f"{tag}.x_norm_patchtokens"])
        ours = tokens if name == "dino_hub" else tokens[:, model.num_prefix_tokens:]
        assert max_err(ours, ref) <= TOL


@pytest.mark.parametrize("name", ["dinov2_reg", "dinov3"])
@torch.no_grad()
def test_block_output_is_built_from_these_probabilities(name: str) -> None:
    """proj(probs @ v) equals the block's own (fused, RoPE) attention output: the map shown is
    the attention the model used."""
    model = build(name)
    _set_fused(model, True)
    x = io(name)["inputs"]["other"]
    blk = model.encoder.blocks[-1]
    seen = {}
    h1 = blk.attn.register_forward_hook(lambda m, a, kw, out: seen.update(inp=a[0], out=out), with_kwargs=True)
    try:
        _, _, probs, grid = model.run_blocks(x, attn_of=[model.depth - 1])
    finally:
        h1.remove()
    y = seen["inp"]
    b, n, c = y.shape
    attn = blk.attn
    if getattr(attn, "qkv", None) is not None:
        bias = attn.qkv.bias if getattr(attn, "q_bias", None) is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        v = torch.nn.functional.linear(y, attn.qkv.weight, bias).reshape(b, n, 3, attn.num_heads, -1)[:, :, 2]
    else:
        v = attn.v_proj(y).reshape(b, n, attn.num_heads, -1)
    v = v.transpose(1, 2)
    rebuilt = attn.proj((probs[model.depth - 1] @ v).transpose(1, 2).reshape(b, n, c))
    assert max_err(rebuilt, seen["out"]) <= 1e-5


@pytest.mark.parametrize("name", REG_MODELS)
@torch.no_grad()
def test_register_patch_grid_has_grid_size_and_no_register(name: str) -> None:
    model = build(name)
    assert model.num_register_tokens > 0
    for tag in ("native", "other"):
        x = io(name)["inputs"][tag]
        t = model.block_tokens(x, -1)
        h, w = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
        grid = t.patch_grid()
        assert grid.shape == (x.shape[0], model.embed_dim, h, w)
        assert t.registers.shape == (x.shape[0], model.num_register_tokens, model.embed_dim)
        flat = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for r in range(model.num_register_tokens):
            d = (flat - t.registers[:, r : r + 1]).abs().amax(-1)
            assert bool((d > 1e-3).all()), f"register {r} found in the patch grid"
        cls = t.cls[:, None]
        assert bool(((flat - cls).abs().amax(-1) > 1e-3).all())


@pytest.mark.parametrize("name", ["dinov2_reg", "dinov3"])
@torch.no_grad()
def test_cls_attention_maps_skip_registers_at_any_size(name: str) -> None:
    model = build(name)
    d = io(name)
    x = d["inputs"]["other"]  # non-square
    res = compute_maps(model, x, MapSpec(method="cls_attention"))
    h, w = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    assert res.grid_maps.shape[-2:] == (h, w)
    ref = d["outputs"]["other.last_block_attn_probs"][:, :, 0, model.num_prefix_tokens:]
    ref = (ref / ref.sum(-1, keepdim=True)).reshape(x.shape[0], -1, h, w)
    assert max_err(torch.from_numpy(res.grid_maps[:, :-1]), ref) <= TOL
    roll = compute_maps(model, x, MapSpec(method="rollout"))
    assert roll.grid_maps.shape[-2:] == (h, w)
    assert np.allclose(roll.grid_maps.reshape(x.shape[0], -1).sum(-1), 1.0, atol=1e-5)


@torch.no_grad()
def test_dino_mass_threshold_keeps_minimal_60_percent(tmp_path) -> None:
    d = io("dinov2_reg")
    model = build("dinov2_reg")
    x = d["inputs"]["native"]
    probs = d["outputs"]["native.last_block_attn_probs"][:, :, 0, model.num_prefix_tokens:]
    h, w = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    maps = (probs / probs.sum(-1, keepdim=True)).reshape(x.shape[0], -1, h, w)
    keep = mass_threshold(maps, 0.6)
    flat, kept = maps.flatten(2), keep.flatten(2)
    mass = (flat * kept).sum(-1)
    assert bool((mass >= 0.6 - 1e-6).all())
    smallest_kept = torch.where(kept, flat, torch.full_like(flat, 2.0)).amin(-1)
    assert bool((mass - smallest_kept < 0.6 + 1e-6).all()), "not the minimal set"
    largest_dropped = torch.where(kept, torch.full_like(flat, -1.0), flat).amax(-1)
    assert bool((largest_dropped <= smallest_kept + 1e-7).all()), "kept set is not the top of the sort"
    img = model.denormalize(x)[0].permute(1, 2, 0).numpy()
    up = keep[0].float()[:, None]
    up = torch.nn.functional.interpolate(up, size=x.shape[-2:], mode="nearest")[:, 0].bool().numpy()
    fig = head_overlay_figure(img, up, "dinov2_reg: heads, 60 % mass", provenance="fixture dinov2_reg")
    fig.savefig(tmp_path / "heads.png")
    assert (tmp_path / "heads.png").stat().st_size > 0
