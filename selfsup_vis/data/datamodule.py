"""LightningDataModules: one per data source, all yielding the same sample dicts.

Splits come through the constructor; the pipelines (decided by the model: its size,
normalisation and training views) and the predict subset through one validated
``configure`` call. The DataModule owns splits, loaders and sampling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Subset

from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.config.schemas import (
    CueConflictDataConfig,
    ImageFolderDataConfig,
    ImageNetDataConfig,
    SyntheticDataConfig,
)
from selfsup_vis.data.base import ImageDataset, collate_skip_none
from selfsup_vis.data.cue_conflict import check_cue_conflict_layout
from selfsup_vis.data.folders import image_folder_dataset, imagenet_dataset
from selfsup_vis.data.gpu_decode import GpuDecodeHook
from selfsup_vis.data.synthetic import SyntheticShapes
from selfsup_vis.data.transforms import Pipeline

log = logging.getLogger(__name__)
_clamp_logged: set[tuple[int, int]] = set()


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (what ``taskset``,
    a cgroup cpuset and Slurm's ``--cpus-per-task`` restrict), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """``dataset.num_workers`` capped at the usable CPUs: more worker processes than cores only
    compete with the training process (4 workers on 2 cores slowed a small run down), so the
    cap applies and is logged once per process and value."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    if (requested, cpus) not in _clamp_logged:
        _clamp_logged.add((requested, cpus))
        log.info("dataset.num_workers=%d but this process may use %d CPU(s): using %d DataLoader workers",
                 requested, cpus, cpus)
    return cpus


class ImageDataModule(pl.LightningDataModule):
    """Shared loader logic; subclasses implement ``make_dataset(split, transform)``."""

    #: center-crop fraction of the eval pipeline (None = plain resize to the model's size)
    eval_crop_pct: float | None = 0.875

    def __init__(
        self,
        name: str,
        *,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        train_split: str,
        eval_split: str,
        decode: str,
    ) -> None:
        super().__init__()
        self.gpu_decode = GpuDecodeHook(decode)  # dataset.decode: checked here, before any work
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_split = train_split
        self.eval_split = eval_split
        self.train_pipeline: Pipeline | None = None
        self.eval_pipeline: Pipeline | None = None
        self.val_pipeline: Pipeline | None = None
        self.predict_indices: Sequence[int] | None = None
        self._cache: dict[tuple[str, int], ImageDataset] = {}

    def make_dataset(self, split: str, transform: Pipeline | None) -> ImageDataset:
        raise NotImplementedError

    def dataset(self, split: str, transform: Pipeline | None = None) -> ImageDataset:
        """The dataset of ``split`` with ``transform`` (file scans are cached per split)."""
        key = (split, id(transform))
        if key not in self._cache:
            self._cache[key] = self.make_dataset(split, transform)
        return self._cache[key]

    @property
    def classes(self) -> list[str]:
        return self.dataset(self.eval_split).classes

    def configure(
        self,
        train: Pipeline | None = None,
        eval: Pipeline | None = None,
        val: Pipeline | None = None,
        predict_indices: Sequence[int] | None = None,
    ) -> ImageDataModule:
        """Set the pipelines and the (sorted, unique, in-range) indices ``predict`` iterates."""
        for what, p in (("train", train), ("eval", eval), ("val", val)):
            if p is not None and not callable(p):
                raise TypeError(f"dataset {self.name}: the {what} pipeline is not callable: {p!r}")
        if predict_indices is not None:
            idx = [int(i) for i in predict_indices]
            n = len(self.dataset(self.eval_split))
            if idx != sorted(set(idx)) or (idx and not 0 <= idx[0] <= idx[-1] < n):
                raise ValueError(f"dataset {self.name}/{self.eval_split}: predict indices must be sorted, "
                                 f"unique and in [0, {n}); got {idx[:5]}...")
            predict_indices = idx
        self.train_pipeline, self.eval_pipeline, self.val_pipeline = train, eval, val
        self.predict_indices = predict_indices
        return self

    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool = False,
                collate: Any = collate_skip_none) -> DataLoader:
        workers = loader_workers(self.num_workers)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            collate_fn=collate,
        )

    def _require(self, pipeline: Pipeline | None, what: str) -> Pipeline:
        if pipeline is None:
            raise RuntimeError(f"dataset {self.name}: no {what} pipeline set; pass it to "
                               f"configure({what}=...), e.g. model_pipeline(cfg.model) of the models "
                               f"package (train) or data.transforms.pipeline_for_model(cfg.model, 'eval')")
        return pipeline

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset(self.train_split, self._require(self.train_pipeline, "train"))
        return self._loader(ds, shuffle=True, drop_last=len(ds) >= 2 * self.batch_size)

    def val_dataloader(self) -> DataLoader:
        pipeline = self.val_pipeline or self._require(self.eval_pipeline, "eval")
        return self._loader(self.dataset(self.eval_split, pipeline), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        pipeline = self._require(self.eval_pipeline, "eval")
        ds: Dataset = self.dataset(self.eval_split, pipeline)
        ds, collate = self.gpu_decode.prepare(ds, pipeline, getattr(self, "trainer", None))
        if self.predict_indices is not None:
            ds = Subset(ds, list(self.predict_indices))
        return self._loader(ds, shuffle=False, collate=collate or collate_skip_none)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """dataset.decode=gpu: the batch's JPEG bytes become images on the trainer's device."""
        return self.gpu_decode(batch)

    def test_dataloader(self) -> DataLoader:
        return self.predict_dataloader()


@takes_schema(SyntheticDataConfig)
class SyntheticDataModule(ImageDataModule):
    """The embedded default: shapes × textures generated on the fly (no files)."""

    eval_crop_pct = None

    def __init__(
        self,
        *,
        name: str,
        num_classes: int,
        image_size: int,
        samples_per_class: int,
        val_samples_per_class: int,
        conflict_per_pair: int,
        seed: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.num_classes = num_classes
        self.image_size = image_size
        self.samples_per_class = samples_per_class
        self.val_samples_per_class = val_samples_per_class
        self.conflict_per_pair = conflict_per_pair
        self.seed = seed

    def make_dataset(self, split: str, transform: Pipeline | None) -> ImageDataset:
        per_class = self.val_samples_per_class if split == "val" else self.samples_per_class
        return SyntheticShapes(
            split, self.num_classes, self.image_size, per_class, self.conflict_per_pair, self.seed, transform
        )


@takes_schema(ImageFolderDataConfig)
class ImageFolderDataModule(ImageDataModule):
    """``root/<class>/<image>``; optional ``train_dir`` / ``val_dir`` sub-folders of root."""

    def __init__(
        self,
        root: str,
        *,
        name: str,
        train_dir: str | None,
        val_dir: str | None,
        skip_corrupt: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.root = Path(root).expanduser()
        self.dirs = {self.train_split: train_dir, self.eval_split: val_dir}
        self.skip_corrupt = skip_corrupt

    def make_dataset(self, split: str, transform: Pipeline | None) -> ImageDataset:
        sub = self.dirs.get(split)
        root = self.root / sub if sub else self.root
        return image_folder_dataset(root, transform, self.skip_corrupt)


@takes_schema(ImageNetDataConfig)
class ImageNetDataModule(ImageDataModule):
    """ImageNet-style ``root/<split>``: class folders, or a flat folder + label file."""

    def __init__(
        self,
        root: str,
        *,
        name: str,
        label_file: str | None,
        class_names_file: str | None,
        skip_corrupt: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.root = root
        self.label_file = label_file
        self.class_names_file = class_names_file
        self.skip_corrupt = skip_corrupt

    def make_dataset(self, split: str, transform: Pipeline | None) -> ImageDataset:
        return imagenet_dataset(
            self.root, split, self.label_file, self.class_names_file, transform, self.skip_corrupt
        )


@takes_schema(CueConflictDataConfig)
class CueConflictDataModule(ImageDataModule):
    """The cue-conflict stimuli: ``root/<shape category>/<shape><i>-<texture><j>.png``.

    Preprocessing ``model_vs_human`` (default) feeds the 224 px images as they are, only
    normalised; ``mmselfsup`` resizes to 256 and center-crops 224 as MMSelfSup did.
    """

    def __init__(
        self,
        root: str,
        *,
        name: str,
        preprocessing: str,
        check_layout: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        if preprocessing not in ("model_vs_human", "mmselfsup"):
            raise ValueError(
                f"dataset.preprocessing must be 'model_vs_human' or 'mmselfsup', got {preprocessing!r}"
            )
        self.root = Path(root).expanduser()
        self.preprocessing = preprocessing
        self.eval_crop_pct = None if preprocessing == "model_vs_human" else 224 / 256
        self.check_layout = check_layout

    def make_dataset(self, split: str, transform: Pipeline | None) -> ImageDataset:
        if self.check_layout:
            check_cue_conflict_layout(self.root)
        return image_folder_dataset(self.root, transform)
