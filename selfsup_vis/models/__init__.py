"""selfsup_vis models: one LightningModule per algorithm on a timm backbone.

``build_model(cfg.model)`` instantiates the ``_target_`` class and loads ``checkpoint``
(path or URL; MMSelfSup 1.x / mmpretrain, official MAE / MoCo, timm or our own Lightning
layout), logging the load report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from selfsup_vis.models.base import SSLModule
from selfsup_vis.models.masked import MaskedImageModule, MaskedReconstruction
from selfsup_vis.models.registry import Family, families, model_class, model_pipeline

log = logging.getLogger(__name__)

__all__ = ["Family", "MaskedImageModule", "MaskedReconstruction", "SSLModule", "build_model",
           "families", "model_class", "model_pipeline"]


def build_model(cfg: Mapping[str, Any] | Any, load: bool = True, device: str | torch.device | None = None,
                **overrides: Any) -> SSLModule:
    """Instantiate ``cfg`` (a model config with ``_target_``) and load its checkpoint.

    ``overrides`` are constructor arguments that replace the config's (e.g. a task's
    ``pooling=``, ``predict_layers=``, ``final_norm_blocks=``; ``None`` values are ignored), so
    that they are validated by the constructor; keys the config lacks take the schema's defaults
    (``@takes_schema``). ``device='meta'`` builds without allocating
    weights (for key/shape checks)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg = {k: (str(v) if isinstance(v, Enum) else v) for k, v in dict(cfg).items()}
    cfg.update({k: (str(v) if isinstance(v, Enum) else v) for k, v in overrides.items() if v is not None})
    try:
        if device is not None:
            with torch.device(device):
                model = instantiate(cfg, _convert_="all")
        else:
            model = instantiate(cfg, _convert_="all")
    except InstantiationException as err:  # the constructor's own message names model and value
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise
    if load and cfg.get("checkpoint"):
        report = model.load_weights(cfg["checkpoint"])
        log.info("%s", report.summary())
        for w in report.warnings:
            log.warning("%s: %s", cfg["checkpoint"], w)
    return model
