"""What every drawing callback shares: when to fire (a due step every N optimizer steps or
epochs, at most once per ``min_interval_s`` of wall time, and always at the end), never during
sanity checking, rank zero only, the model in eval mode, a drawing error logged as a warning
instead of breaking training, and the time it cost; plus a fixed validation subset.

Why wall time: on a small folder an epoch lasts a second and a figure takes about as long, so
a per-epoch schedule multiplied training time (a 40-image run: 420 s with the snapshots vs 41 s
without); on ImageNet an epoch lasts an hour and a per-epoch figure comes too rarely. A due
step that is also at least ``min_interval_s`` after the callback's previous snapshot bounds the
cost to (time of one snapshot) / ``min_interval_s`` on any run. The interval counts from the
start of training too: a snapshot of a model a few steps old says little, and a short run (a
small folder, a quick check) then pays for the final state only, drawn at the end."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup_vis.attention.masks import to_input_geometry
from selfsup_vis.plotting.log import log_figure, log_image, save_figure

log = logging.getLogger(__name__)


class PeriodicCallback(pl.Callback):
    """Calls ``snapshot(trainer, pl_module)`` on global rank zero, with the module in eval mode
    and no gradients, when a step is due (every ``every_n_steps`` optimizer steps and/or at the
    end of every ``every_n_epochs``-th epoch) and at least ``min_interval_s`` seconds have
    passed since this callback's previous snapshot; and once more at the end of training when
    ``at_train_end`` (whatever the interval: the final state is always shown). The interval
    also runs from the start of training. ``timings`` holds (global step, seconds) of every
    snapshot."""

    subdir = "snapshots"

    def __init__(self, every_n_steps: int | None, every_n_epochs: int | None, min_interval_s: float,
                 at_train_end: bool, dirpath: str | None, formats: Sequence[str]) -> None:
        super().__init__()
        for name, v in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if v is not None and int(v) < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be >= 1 or null, got {v}")
        if min_interval_s is None or not float(min_interval_s) >= 0:
            raise ValueError(f"{type(self).__name__}: min_interval_s must be >= 0 (seconds), got {min_interval_s}")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.min_interval_s = float(min_interval_s)
        self.at_train_end = at_train_end
        self.dirpath = dirpath
        self.formats = tuple(formats)
        self.last_step: int | None = None
        self._last_fired: float | None = None  # time.monotonic(): the last snapshot's end, or the start
        self.failures: list[str] = []
        self.timings: list[tuple[int, float]] = []

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_fired = time.monotonic()  # the first due step waits min_interval_s too

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self.last_step:
            self._fire(trainer, pl_module, due=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._fire(trainer, pl_module, due=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_train_end:
            self._fire(trainer, pl_module, due=False)
        if self.timings and trainer.is_global_zero:
            secs = [s for _, s in self.timings]
            steps = [str(s) for s, _ in self.timings]
            rest = f", then {sum(secs[1:]) / (len(secs) - 1):.2f} s each" if len(secs) > 1 else ""
            log.info("%s: %d snapshot(s) at step(s) %s took %.1f s (the first %.2f s%s)", type(self).__name__,
                     len(secs), ", ".join(steps if len(steps) <= 8 else [*steps[:4], "...", *steps[-3:]]),
                     sum(secs), secs[0], rest)

    # ------------------------------------------------------------------ plumbing
    def out_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / self.subdir

    def _too_soon(self) -> bool:
        return self._last_fired is not None and time.monotonic() - self._last_fired < self.min_interval_s

    def _fire(self, trainer: pl.Trainer, pl_module: pl.LightningModule, due: bool) -> None:
        """``due``: a scheduled step, which waits for ``min_interval_s``; else the end of training."""
        if trainer.sanity_checking or self.last_step == trainer.global_step or (due and self._too_soon()):
            return
        self.last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        start = time.perf_counter()
        try:
            with torch.no_grad():
                self.snapshot(trainer, pl_module)
        except Exception as err:  # a figure must never cost a training run
            msg = f"{type(self).__name__} failed at step {trainer.global_step}: {type(err).__name__}: {err}"
            self.failures.append(msg)
            log.warning(msg)
        finally:
            pl_module.train(was_training)
            self.timings.append((trainer.global_step, time.perf_counter() - start))
            self._last_fired = time.monotonic()

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def publish(self, trainer: pl.Trainer, fig: Figure, name: str, key: str) -> Path:
        """``fig`` to ``<out_dir>/<name>.<format>`` and to every logger as ``key``, rendered once:
        the loggers get the saved PNG's pixels (what ``log_figure`` would render again); PNGs
        at zlib level 1 (a snapshot's time matters more than its bytes).
        Returns the path without extension."""
        base = self.out_dir(trainer) / name
        paths = save_figure(fig, base, self.formats, png_compress_level=1)  # 3-4x faster to encode
        png = next((p for p in paths if p.suffix == ".png"), None)
        if png is None:
            log_figure(trainer.loggers, key, fig, step=trainer.global_step)
        elif trainer.loggers:
            with Image.open(png) as im:
                log_image(trainer.loggers, key, np.asarray(im.convert("RGB")), step=trainer.global_step, png=png)
        fig.clf()
        return base


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
