"""The images of ``task=dense`` and the callback: files / folders (``task.images``) or evenly
spaced samples of the dataset, in the model's input geometry, with object masks where known
(the synthetic set's, or ``task.masks_root``: the same masks as the pointing game)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from selfsup_vis.attention.masks import find_mask, load_mask, to_input_geometry
from selfsup_vis.data.image_files import expand_images, load_image_files
from selfsup_vis.data.transforms import pipeline_for_model

log = logging.getLogger(__name__)


@dataclass
class DenseInputs:
    images: torch.Tensor  # (n, 3, H, W) model-normalised
    names: list[str]
    masks: torch.Tensor | None = None  # (n, H, W) bool
    source: dict[str, Any] = field(default_factory=dict)


def given(images: Any) -> bool:
    return images is not None and not (isinstance(images, ListConfig | list) and len(images) == 0)


def load_inputs(t: DictConfig, model_cfg: DictConfig, dataset_cfg: DictConfig) -> DenseInputs:
    """``model_cfg.img_size`` is the input size (the task has already applied task.img_size)."""
    size = int(model_cfg.img_size)
    if given(t.images):
        files = expand_images(t.images, t.max_images)
        images, names = load_image_files(files, model_cfg, t.resize)
        masks = None
        if t.masks_root:
            crop = 1.0 if t.resize == "crop" else None
            masks = [load_mask(find_mask(t.masks_root, f.name), size, crop) for f in files]
        return DenseInputs(images, names, torch.from_numpy(np.stack(masks)) if masks else None,
                           {"images": [str(f) for f in files]})
    dm = hydra.utils.instantiate(dataset_cfg)
    crop = dm.eval_crop_pct
    split = t.split or dm.eval_split
    ds = dm.dataset(split, pipeline_for_model(model_cfg, "eval", crop_pct=crop))
    if len(ds) == 0:
        raise ValueError(f"dense: dataset {dm.name} split {split!r} is empty")
    idx = np.unique(np.linspace(0, len(ds) - 1, min(t.max_images, len(ds))).round().astype(int)).tolist()
    samples = [(i, ds[i]) for i in idx]
    samples = [(i, s) for i, s in samples if s is not None]
    masks = None
    if hasattr(ds, "object_mask") and ds.object_mask(samples[0][0]) is not None:
        masks = [to_input_geometry(ds.object_mask(i), size, crop) for i, _ in samples]
    elif t.masks_root:
        masks = [load_mask(find_mask(t.masks_root, s["name"]), size, crop) for _, s in samples]
    log.info("no task.images: %d images of %s/%s%s", len(samples), dm.name, split,
             " with object masks" if masks is not None else "")
    return DenseInputs(torch.stack([s["image"] for _, s in samples]), [f"{i}_{s['name']}" for i, s in samples],
                       torch.from_numpy(np.stack(masks)) if masks is not None else None,
                       {"dataset": dm.name, "split": split, "indices": [i for i, _ in samples]})
