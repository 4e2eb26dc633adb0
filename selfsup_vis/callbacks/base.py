"""What every drawing callback shares: when to fire (every N steps / epochs, at the end),
never during sanity checking, rank zero only, the model in eval mode, and a drawing error
logged as a warning instead of breaking training; plus a fixed validation subset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from selfsup_vis.attention.masks import to_input_geometry

log = logging.getLogger(__name__)


class PeriodicCallback(pl.Callback):
    """Calls ``snapshot(trainer, pl_module)`` every ``every_n_steps`` optimizer steps and/or
    every ``every_n_epochs`` epochs (and once more at the end of training when
    ``at_train_end``), on global rank zero, with the module in eval mode and no gradients."""

    subdir = "snapshots"

    def __init__(self, every_n_steps: int | None, every_n_epochs: int | None, at_train_end: bool,
                 dirpath: str | None, formats: Sequence[str]) -> None:
        super().__init__()
        for name, v in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if v is not None and int(v) < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 1 or null, got {v}")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.at_train_end = at_train_end
        self.dirpath = dirpath
        self.formats = tuple(formats)
        self.last_step: int | None = None
        self.failures: list[str] = []

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self.last_step:
            self._fire(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._fire(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_train_end:
            self._fire(trainer, pl_module)

    # ------------------------------------------------------------------ plumbing
    def out_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / self.subdir

    def _fire(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.last_step == trainer.global_step:
            return
        self.last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                self.snapshot(trainer, pl_module)
        except Exception as err:  # a figure must never cost a training run
            msg = f"{type(self).__name__} failed at step {trainer.global_step}: {type(err).__name__}: {err}"
            self.failures.append(msg)
            log.warning(msg)
        finally:
            pl_module.train(was_training)

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------- fixed samples
def _eval_dataset(trainer: pl.Trainer) -> Dataset:
    """The validation dataset with its eval pipeline (our DataModules), else whatever the
    trainer's / datamodule's val (or train) loader iterates."""
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and hasattr(dm, "eval_split") and hasattr(dm, "dataset"):
        pipeline = getattr(dm, "val_pipeline", None) or getattr(dm, "eval_pipeline", None)
        if pipeline is not None:
            return dm.dataset(dm.eval_split, pipeline)
    loaders: Any = None
    if dm is not None:
        try:
            loaders = dm.val_dataloader()
        except Exception:
            loaders = None
    loaders = loaders or trainer.val_dataloaders or trainer.train_dataloader
    if isinstance(loaders, list | tuple):
        loaders = loaders[0]
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()))
    if not isinstance(loaders, DataLoader):
        raise RuntimeError("no dataloader to take fixed samples from")
    return loaders.dataset


def _unpack(sample: Any, position: int) -> tuple[torch.Tensor, int, str]:
    if isinstance(sample, dict):
        image = sample["image"] if "image" in sample else sample["views"][0]
        return image, int(sample.get("label", -1)), str(sample.get("name", position))
    if isinstance(sample, list | tuple):
        label = sample[1] if len(sample) > 1 else -1
        return sample[0], int(label), str(position)
    return sample, -1, str(position)


def fixed_samples(trainer: pl.Trainer, n: int, seed: int) -> dict[str, Any]:
    """``n`` validation samples chosen by ``seed`` (spread over the set), decoded with the
    global RNG forked so that random pipelines give the same images and training's random
    stream is untouched. Returns images (n, 3, H, W), labels, names, indices and classes."""
    ds = _eval_dataset(trainer)
    size = len(ds)
    if size == 0:
        raise RuntimeError("the validation dataset is empty")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(size, size=min(n, size), replace=False))
    images, labels, names = [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in idx:
            sample = ds[int(i)]
            if sample is None:
                continue
            image, label, name = _unpack(sample, int(i))
            images.append(torch.as_tensor(image))
            labels.append(label)
            names.append(name)
    if not images:
        raise RuntimeError("no readable validation samples")
    classes = getattr(ds, "classes", None)
    return {"images": torch.stack(images), "labels": np.asarray(labels), "names": names,
            "indices": idx, "classes": list(classes) if classes else None}


@torch.no_grad()
def batched_features(pl_module: pl.LightningModule, images: torch.Tensor, layer: str | None,
                     batch_size: int = 64) -> tuple[np.ndarray, str]:
    """(N, D) features of ``layer`` (our models' ``extract_features``; default: the model's
    default layer), or the module's own 2-D output for any other LightningModule."""
    device = pl_module.device
    chunks = []
    name = layer or "output"
    if hasattr(pl_module, "extract_features"):
        if layer is None:
            name = pl_module.default_layers()[0]
        for s in range(0, len(images), batch_size):
            chunks.append(pl_module.extract_features(images[s : s + batch_size].to(device), [name])[name])
    else:
        for s in range(0, len(images), batch_size):
            out = pl_module(images[s : s + batch_size].to(device))
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise RuntimeError(f"{type(pl_module).__name__} has no extract_features and its output is "
                                   "not a (B, D) tensor")
            chunks.append(out)
    feats = torch.cat(chunks).float().cpu().numpy()
    return feats, name


def eval_data_name(trainer: pl.Trainer) -> str | None:
    """``<dataset>/<eval split>`` of the trainer's datamodule, for figure provenance."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None:
        return None
    return f"{getattr(dm, 'name', type(dm).__name__)}/{getattr(dm, 'eval_split', 'val')}"


def fixed_object_masks(trainer: pl.Trainer, fixed: dict[str, Any] | None, size: int) -> torch.Tensor | None:
    """The known object masks (synthetic data) of the fixed samples, in the model's input
    geometry (``size`` px, the eval crop), or None where the data has none."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "dataset") or fixed is None:
        return None
    ds = dm.dataset(dm.eval_split)
    if not hasattr(ds, "object_mask"):
        return None
    masks = [ds.object_mask(int(i)) for i in fixed["indices"]]
    if any(m is None for m in masks) or len(masks) != len(fixed["names"]):
        return None
    crop = getattr(dm, "eval_crop_pct", None)
    return torch.from_numpy(np.stack([to_input_geometry(m, size, crop) for m in masks]))
