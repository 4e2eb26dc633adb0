"""selfsup_vis models: one LightningModule per algorithm on a timm backbone.

``build_model(cfg.model)`` instantiates the ``_target_`` class and loads ``checkpoint``
(path or URL; MMSelfSup 1.x / mmpretrain, official MAE / MoCo, timm or our own Lightning
layout), logging the load report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from selfsup_vis.models.base import SSLModule

log = logging.getLogger(__name__)

__all__ = ["SSLModule", "build_model"]


def build_model(cfg: Mapping[str, Any] | Any, load: bool = True, device: str | torch.device | None = None
                ) -> SSLModule:
    """Instantiate ``cfg`` (a model config with ``_target_``) and load its checkpoint.

    ``device='meta'`` builds without allocating weights (for key/shape checks)."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    if device is not None:
        with torch.device(device):
            model = instantiate(cfg, _convert_="all")
    else:
        model = instantiate(cfg, _convert_="all")
    if load and cfg.get("checkpoint"):
        report = model.load_weights(cfg["checkpoint"])
        log.info("%s", report.summary())
        for w in report.warnings:
            log.warning("%s: %s", cfg["checkpoint"], w)
    return model
