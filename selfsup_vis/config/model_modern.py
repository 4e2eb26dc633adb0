"""Typed schema of the released self-supervised ViTs (``model=dino_vits16``, ``dinov2_vits14_reg``,
``dinov3_vitb16``, ``mae_official_vit-b16`` (features), ``mocov3_vit-s``, ``ijepa_vit-h14``,
``hf``): one schema, ``pretrained_vit``, whose ``family`` picks the reference behaviour.

Torch-free on purpose (the config layer composes without torch). The schema extends the
common ``ModelConfig``; config/model.py passes it in (:func:`modern_schemas`) so that this
module imports nothing from it and the registry stays one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: per family: what the reference does that a preset must not forget (documentation and
#: validation; the numbers a preset needs are in its yaml)
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "dino": {"interpolate_offset": 0.1, "interpolate_antialias": False, "norm_eps": 1e-6},
    "dinov2": {"interpolate_offset": 0.1, "interpolate_antialias": False, "norm_eps": 1e-6,
               "layerscale": 1.0, "mask_token": True},
    "dinov3": {"norm_eps": 1e-5, "layerscale": 1e-5, "mask_token": True, "rope_base": 100.0},
    "mae": {"interpolate_offset": 0.0, "norm_eps": 1e-6},
    "mocov3": {"interpolate_offset": 0.0, "norm_eps": 1e-6},
    "ijepa": {"interpolate_offset": 0.0, "norm_eps": 1e-6, "class_token": False},
}
#: the part of a training checkpoint to use (``auto``: teacher / base / target encoder)
CHECKPOINT_KEYS = ("auto", "teacher", "student", "base_encoder", "momentum_encoder",
                   "target_encoder", "encoder", "backbone", "model")


def modern_schemas(base: type) -> dict[str, type]:
    """The schemas of this module on top of ``base`` (config/model.py's ``ModelConfig``)."""

    @dataclass
    class PretrainedViTConfig(base):  # type: ignore[misc, valid-type]
        """A released SSL ViT: sizes and the reference's token / interpolation behaviour."""

        _target_: str = "selfsup_vis.models.pretrained_vit.PretrainedViT"
        family: str = "dinov2"  # dino | dinov2 | dinov3 | mae | mocov3 | ijepa
        patch_size: int = field(default=14, metadata={"min": 1, "divides": "img_size"})
        embed_dim: int = 384
        depth: int = 12
        num_heads: int = 6
        mlp_hidden: int | None = None  # MLP / SwiGLU hidden width (None: 4 x embed_dim)
        ffn_layer: str = "mlp"  # mlp | swiglu
        num_register_tokens: int = 0  # DINOv2 registers / DINOv3 storage tokens
        class_token: bool = True
        layerscale: float | None = None
        norm_eps: float = 1.0e-6
        qkv_bias: bool = True
        interpolate_offset: float = 0.0  # DINO / DINOv2: 0.1 (scale_factor), 0: size=
        interpolate_antialias: bool = False  # DINOv2 register models: True
        mask_token: bool = False
        rope_base: float = 100.0
        checkpoint_key: str = "auto"  # see CHECKPOINT_KEYS
        path: str | None = None  # Hugging Face save_pretrained folder or cached Hub id
        pretrained: bool = False  # no downloads: true without a checkpoint fails with a hint
        hf_layout: bool = False  # DINOv3 from a Hugging Face folder (separate q/k/v)

    @dataclass
    class MMSelfSupR50Config(base):  # type: ignore[misc, valid-type]
        """An MMSelfSup / mmpretrain ResNet-50 SSL checkpoint as a backbone (SimCLR, BYOL,
        SimSiam, SwAV, DenseCL, Barlow Twins, MoCo v1/v2): neck and head are reported ignored."""

        _target_: str = "selfsup_vis.models.mmselfsup_r50.MMSelfSupResNet"
        depth: int = 50
        stem_channels: int = 64
        base_channels: int = 64

    return {"pretrained_vit": PretrainedViTConfig, "mmselfsup_r50": MMSelfSupR50Config}
