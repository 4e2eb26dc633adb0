"""Hugging Face ``save_pretrained`` folders (config.json + model.safetensors, Hub key layout) of
Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel and ViTMAE, read without transformers:
the architecture comes from config.json, the tensors from safetensors, q / k / v are merged
into timm's fused ``qkv``. A Hub id is looked up in the local Hugging Face cache only, so an
offline machine fails at once with a message instead of hanging on the network."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from selfsup_vis.checkpoints.formats.base import CheckpointFormat, Section, merge_qkv
from selfsup_vis.checkpoints.keymap import KeyMap
from selfsup_vis.checkpoints.loading import CheckpointError, LoadReport, convert_state_dict

MODEL_TYPES = {"dinov2": "dinov2", "dinov2_with_registers": "dinov2", "dinov3_vit": "dinov3",
               "vit_mae": "mae"}


class WeightsNotHereError(CheckpointError, ValueError):
    """Weights that are neither local nor in the Hugging Face cache (raised at construction,
    so it is a ValueError too: the model's own message reaches the user unwrapped)."""


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return Path(os.environ.get("HF_HUB_CACHE", str(Path(home) / "hub")))


def offline_error(what: str) -> CheckpointError:
    return WeightsNotHereError(
        f"{what}: the weights are not on this machine and selfsup_vis does not download them here. "
        f"Looked in the Hugging Face cache {hf_cache_dir()} (HF_HUB_CACHE / HF_HOME; "
        f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download them where there "
        f"is network (e.g. `huggingface-cli download <id>` or the official .pth) and pass "
        f"model.checkpoint=<file> or model.path=<save_pretrained folder>.")


def resolve_hf(path: str | os.PathLike) -> Path:
    """A save_pretrained folder, or a Hub id (``org/name``) found in the local HF cache."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p}: a Hugging Face folder needs config.json (found {sorted(x.name for x in p.iterdir())[:8]})")
        return p
    s = str(path)
    if s.count("/") == 1 and not p.exists():
        snaps = hf_cache_dir() / f"models--{s.replace('/', '--')}" / "snapshots"
        found = sorted(snaps.glob("*/config.json"), key=lambda f: f.stat().st_mtime) if snaps.is_dir() else []
        if found:
            return found[-1].parent
        raise offline_error(f"model.path={s} (Hub id)")
    raise CheckpointError(f"model.path={s}: no such folder (a save_pretrained folder or a Hub id org/name)")


def read_hf_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def read_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors file (pytorch_model.bin is not read: "
                              f"re-save with save_pretrained(safe_serialization=True))")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _swiglu_hidden(c: int, ratio: float) -> int:
    hidden = int(int(c * ratio) * 2 / 3)
    return (hidden + 7) // 8 * 8


def arch_from_hf(path: str | os.PathLike) -> dict[str, Any]:
    """PretrainedViT constructor arguments from a Hugging Face config.json."""
    folder = resolve_hf(path)
    cfg = read_hf_config(folder)
    mtype = cfg.get("model_type")
    if mtype not in MODEL_TYPES:
        raise CheckpointError(f"{folder}/config.json: model_type {mtype!r} is not supported "
                              f"(supported: {', '.join(MODEL_TYPES)})")
    c = int(cfg["hidden_size"])
    family = MODEL_TYPES[mtype]
    arch = {"family": family, "folder": str(folder), "img_size": int(cfg.get("image_size", 224)),
            "patch_size": int(cfg["patch_size"]), "embed_dim": c,
            "depth": int(cfg["num_hidden_layers"]), "num_heads": int(cfg["num_attention_heads"]),
            "norm_eps": float(cfg.get("layer_norm_eps", 1e-6)), "ffn_layer": "mlp",
            "num_register_tokens": int(cfg.get("num_register_tokens", 0)), "layerscale": None,
            "interpolate_offset": 0.0, "interpolate_antialias": mtype == "dinov2_with_registers",
            "mask_token": family in ("dinov2", "dinov3"), "rope_base": float(cfg.get("rope_theta", 100.0)),
            "mlp_hidden": None}
    if family == "dinov2":
        arch["layerscale"] = float(cfg.get("layerscale_value", 1.0))
        ratio = float(cfg.get("mlp_ratio", 4))
        if cfg.get("use_swiglu_ffn"):
            arch["ffn_layer"], arch["mlp_hidden"] = "swiglu", _swiglu_hidden(c, ratio)
        else:
            arch["mlp_hidden"] = int(c * ratio)
    elif family == "dinov3":
        arch["layerscale"] = float(cfg.get("layerscale_value", 1.0))
        arch["mlp_hidden"] = int(cfg["intermediate_size"])
        arch["ffn_layer"] = "swiglu" if cfg.get("use_gated_mlp") else "mlp"
    else:
        arch["mlp_hidden"] = int(cfg.get("intermediate_size", 4 * c))
    return arch


HF_DINOV2 = CheckpointFormat(
    name="hf_dinov2", family="dinov2",
    description="Hugging Face Dinov2Model / Dinov2WithRegistersModel save_pretrained folder",
    sections=(Section(None, "", "model.safetensors", "model"),),
    required=("embeddings.cls_token", "embeddings.position_embeddings", "encoder.layer.0.norm1.weight"),
    rules=[
        ("embeddings.cls_token", "encoder.cls_token"),
        ("embeddings.mask_token", "mask_token"),
        ("embeddings.position_embeddings", "encoder.pos_embed"),
        ("embeddings.register_tokens", "register_tokens"),
        ("embeddings.patch_embeddings.projection.", "encoder.patch_embed.proj."),
        ("encoder.layer.{i}.attention.attention.qkv.", "encoder.blocks.{i}.attn.qkv."),
        ("encoder.layer.{i}.attention.output.dense.", "encoder.blocks.{i}.attn.proj."),
        ("encoder.layer.{i}.layer_scale1.lambda1", "encoder.blocks.{i}.ls1.gamma"),
        ("encoder.layer.{i}.layer_scale2.lambda1", "encoder.blocks.{i}.ls2.gamma"),
        ("encoder.layer.{i}.mlp.weights_in.", "encoder.blocks.{i}.mlp.fc1."),
        ("encoder.layer.{i}.mlp.weights_out.", "encoder.blocks.{i}.mlp.fc2."),
        ("encoder.layer.{i}.", "encoder.blocks.{i}."),
        ("layernorm.", "encoder.norm."),
    ],
    transforms=[(r"^mask_token$", lambda t: t.reshape(1, -1), lambda t: t.reshape(1, -1))],
    prepare=merge_qkv("encoder.layer.", "attention.attention.query", "attention.attention.key",
                      "attention.attention.value", "attention.attention.qkv"),
    hf_model_type=("dinov2", "dinov2_with_registers"),
)

def _hf_dinov3_prepare(state: dict[str, torch.Tensor], model: Any, notes: list[tuple[str, str]]
                       ) -> dict[str, torch.Tensor]:
    """up_proj is fc1 of the plain MLP but fc1_x of the gated one."""
    gated = any(".mlp.gate_proj." in k for k in state)
    out = {}
    for k, v in state.items():
        if ".mlp.up_proj." in k:
            k = k.replace(".mlp.up_proj.", ".mlp.fc1_x." if gated else ".mlp.fc1.")
        out[k] = v
    return out


HF_DINOV3 = CheckpointFormat(
    name="hf_dinov3", family="dinov3",
    description="Hugging Face DINOv3ViTModel save_pretrained folder",
    sections=(Section(None, "", "model.safetensors", "model"),),
    required=("embeddings.cls_token", "embeddings.register_tokens", "layer.0.norm1.weight"),
    rules=[
        ("embeddings.cls_token", "encoder.cls_token"),
        ("embeddings.mask_token", "mask_token"),
        ("embeddings.register_tokens", "encoder.reg_token"),
        ("embeddings.patch_embeddings.", "encoder.patch_embed.proj."),
        ("layer.{i}.attention.o_proj.", "encoder.blocks.{i}.attn.proj."),
        ("layer.{i}.attention.", "encoder.blocks.{i}.attn."),
        ("layer.{i}.layer_scale1.lambda1", "encoder.blocks.{i}.gamma_1"),
        ("layer.{i}.layer_scale2.lambda1", "encoder.blocks.{i}.gamma_2"),
        ("layer.{i}.mlp.gate_proj.", "encoder.blocks.{i}.mlp.fc1_g."),
        ("layer.{i}.mlp.down_proj.", "encoder.blocks.{i}.mlp.fc2."),
        ("layer.{i}.", "encoder.blocks.{i}."),
        ("norm.", "encoder.norm."),
    ],
    transforms=[(r"^mask_token$", lambda t: t.reshape(1, -1), lambda t: t.reshape(1, 1, -1))],
    prepare=_hf_dinov3_prepare,
    hf_model_type=("dinov3_vit",),
)


_VITMAE_ENCODER = [
    ("vit.embeddings.cls_token", "encoder.cls_token"),
    ("vit.embeddings.position_embeddings", "encoder.pos_embed"),
    ("vit.embeddings.patch_embeddings.projection.", "encoder.patch_embed.proj."),
    ("vit.encoder.layer.{i}.attention.attention.qkv.", "encoder.blocks.{i}.attn.qkv."),
    ("vit.encoder.layer.{i}.attention.output.dense.", "encoder.blocks.{i}.attn.proj."),
    ("vit.encoder.layer.{i}.intermediate.dense.", "encoder.blocks.{i}.mlp.fc1."),
    ("vit.encoder.layer.{i}.output.dense.", "encoder.blocks.{i}.mlp.fc2."),
    ("vit.encoder.layer.{i}.layernorm_before.", "encoder.blocks.{i}.norm1."),
    ("vit.encoder.layer.{i}.layernorm_after.", "encoder.blocks.{i}.norm2."),
    ("vit.layernorm.", "encoder.norm."),
]
#: the ViTMAE decoder onto models/mae.py's MAEDecoder
VITMAE_DECODER = [
    ("decoder.decoder_embed.", "decoder.embed."),
    ("decoder.mask_token", "decoder.mask_token"),
    ("decoder.decoder_pos_embed", "decoder.pos_embed"),
    ("decoder.decoder_layers.{i}.attention.attention.qkv.", "decoder.blocks.{i}.attn.qkv."),
    ("decoder.decoder_layers.{i}.attention.output.dense.", "decoder.blocks.{i}.attn.proj."),
    ("decoder.decoder_layers.{i}.intermediate.dense.", "decoder.blocks.{i}.mlp.fc1."),
    ("decoder.decoder_layers.{i}.output.dense.", "decoder.blocks.{i}.mlp.fc2."),
    ("decoder.decoder_layers.{i}.layernorm_before.", "decoder.blocks.{i}.norm1."),
    ("decoder.decoder_layers.{i}.layernorm_after.", "decoder.blocks.{i}.norm2."),
    ("decoder.decoder_norm.", "decoder.norm."),
    ("decoder.decoder_pred.", "decoder.pred."),
]

HF_VITMAE = CheckpointFormat(
    name="hf_vitmae", family="mae",
    description="Hugging Face ViTMAEForPreTraining / ViTMAEModel save_pretrained folder",
    sections=(Section(None, "", "model.safetensors", "model"),),
    required=("vit.embeddings.cls_token", "vit.encoder.layer.0.layernorm_before.weight"),
    rules=list(_VITMAE_ENCODER),
    ignore=[("decoder.", "ViTMAE decoder: not used for features")],
    prepare=merge_qkv("", "attention.attention.query", "attention.attention.key",
                      "attention.attention.value", "attention.attention.qkv"),
    hf_model_type=("vit_mae",),
)

FORMATS = (HF_DINOV2, HF_DINOV3, HF_VITMAE)


def vitmae_full_keymap() -> KeyMap:
    """Encoder + decoder of a Hugging Face ViTMAEForPreTraining folder onto models/mae.py's MAE."""
    return KeyMap("Hugging Face ViTMAEForPreTraining", _VITMAE_ENCODER + VITMAE_DECODER)


def load_hf_mae(model: Any, folder: str | os.PathLike, strict: bool = True) -> LoadReport:
    """A ViTMAEForPreTraining save_pretrained folder into the MAE LightningModule (encoder and
    decoder; q / k / v merged into timm's qkv). transformers' ViTMAE LayerNorm eps is
    ``config.layer_norm_eps`` (1e-12 on the Hub) where the official MAE uses 1e-6: a model
    built with another ``norm_eps`` is refused (``model.norm_eps=`` names the fix)."""
    path = resolve_hf(folder)
    cfg = read_hf_config(path)
    if cfg.get("model_type") != "vit_mae":
        raise CheckpointError(f"{path}: model_type {cfg.get('model_type')!r} is not a ViTMAE; "
                              f"the MAE model loads vit_mae folders (use model=hf for DINOv2/DINOv3)")
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    if float(getattr(model, "norm_eps", eps)) != eps:
        raise CheckpointError(f"{path}/config.json: layer_norm_eps={eps:g} but the model was built with "
                              f"model.norm_eps={model.norm_eps:g}; set model.norm_eps={eps:g} "
                              f"(the outputs would differ from transformers' by up to ~1e-4)")
    state = read_hf_state(path)
    for prefix in ("vit.encoder.layer.", "decoder.decoder_layers."):
        state = merge_qkv(prefix, "attention.attention.query", "attention.attention.key",
                          "attention.attention.value", "attention.attention.qkv")(state, model, [])
    report = LoadReport(source=str(path), layout=HF_VITMAE.name,
                        container="Hugging Face folder (model_type 'vit_mae'); encoder + decoder")
    converted = convert_state_dict(state, vitmae_full_keymap(), model, report)
    errors = report.errors(getattr(model, "required_prefixes", ("",)))
    if errors and strict:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}:\n  " + "\n  ".join(errors))
    report.warnings += errors
    model.load_state_dict(converted, strict=False)
    return report
