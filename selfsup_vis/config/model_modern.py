"""What each released self-supervised ViT reference does (``model=dino_vits16``,
``dinov2_vits14_reg``, ``dinov3_vitb16``, ``mae_official_vit-b16`` (features), ``mocov3_vit-s``,
``ijepa_vit-h14``, ``hf``). Their one schema, ``pretrained_vit`` (``PretrainedViTConfig`` in
config/model.py, where every model schema lives), names the reference in ``release``.

Torch-free on purpose (the config layer composes without torch).
"""

from __future__ import annotations

from typing import Any

#: per release: what the reference does that a preset must not forget (documentation and
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
