"""From a model and a subset (``features/subset.py``) to checked features on disk: the cache
key, the extraction and a typed :class:`FeatureSet`.

Shared by every task that embeds or compares features (``task=tsne``,
``task=compare_embeddings``), so that they key the cache identically (a comparison reuses what
a tsne run extracted, and the other way round), extract each (model, checkpoint, layer) once
and refuse NaN/inf features once, before anything is embedded or drawn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from selfsup_vis.data.gpu_decode import resolve_decode
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.features.cache import (
    FeatureCacheEntry,
    checkpoint_fingerprint,
    default_cache_root,
    file_identity,
    indices_digest,
)
from selfsup_vis.features.extraction import FeatureShardWriter, extract_features

log = logging.getLogger(__name__)


def eval_preprocessing(model_cfg: DictConfig, dm: Any) -> tuple[Any, dict[str, Any]]:
    """The model's eval pipeline on ``dm`` and its description (part of the cache key)."""
    pipeline = pipeline_for_model(model_cfg, "eval", crop_pct=dm.eval_crop_pct)
    described = {"pipeline": pipeline.describe(), "img_size": int(model_cfg.img_size),
                 "mean": list(pipeline.mean), "std": list(pipeline.std), "eval_crop_pct": dm.eval_crop_pct}
    return pipeline, described


def compute_key(trainer_cfg: DictConfig, dataset_cfg: DictConfig, pipeline: Any, base: Any) -> dict[str, Any]:
    """How the features are computed, beyond the model and the images: the device kind (CUDA
    convolutions may run in TF32), the numeric precision (``bf16-mixed`` features differ from
    ``32-true`` ones in the third digit) and the decode path ``dataset.decode`` resolves to
    (nvJPEG differs from PIL by up to a grey level)."""
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    decode, _ = resolve_decode(str(dataset_cfg.get("decode", "auto")), on_cuda=on_cuda, pipeline=pipeline,
                               dataset=base)
    device = "cuda" if on_cuda else "cpu" if accelerator == "auto" else accelerator
    return {"device": device, "precision": str(trainer_cfg.get("precision", "32-true")), "decode": decode}


def feature_cache_meta(model_cfg: DictConfig, dataset_cfg: DictConfig, init_seed: int, split: str,
                       indices: np.ndarray, pooling: str | None, final_norm: bool, base: Any,
                       preprocessing: dict[str, Any], compute: dict[str, Any]) -> dict[str, Any]:
    """Everything the features depend on: a stale cache hit is a plausible wrong figure."""
    model = OmegaConf.to_container(model_cfg, resolve=True)
    checkpoint = model.pop("checkpoint", None)
    paths = getattr(base, "paths", None)  # file datasets: images overwritten in place re-extract
    data = OmegaConf.to_container(dataset_cfg, resolve=True)
    for k in ("batch_size", "num_workers", "pin_memory"):
        data.pop(k, None)
    return {
        "model": str(model.get("name", "model")),
        "model_config": model,
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_fingerprint(checkpoint),
        "dataset": data,
        "split": split,
        "n": int(indices.size),
        "indices_sha": indices_digest(indices),
        "pooling": pooling,
        "final_norm": final_norm,
        "image_files": file_identity([paths[int(i)] for i in indices]) if paths is not None else None,
        # random weights (no checkpoint, or parts left random) depend on the init seed
        "init_seed": int(init_seed) if not checkpoint or model.get("allow_random_parts") else None,
        "preprocessing": preprocessing,
        "compute": compute,
    }


def obtain_features(
    entry: FeatureCacheEntry,
    *,
    use_cache: bool,
    layers: Sequence[str],
    model: pl.LightningModule,
    dm: Any,
    eval_pipeline: Any,
    indices: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    work_dir: Path,
    run_features: Path,
    make_trainer: Callable[[list[pl.Callback]], pl.Trainer],
    timings: dict[str, float] | None = None,
) -> Mapping[str, Path] | None:
    """The run's ``features/<layer>.npy`` for ``layers``: the missing ones extracted (every
    rank takes part) into ``entry``, the rest reused; rank zero holds the entry's lock while it
    checks, builds and copies the entry (other runs wait). Returns None on other ranks."""
    rank_zero = rank_zero_only.rank == 0
    with entry.lock() if use_cache and rank_zero else nullcontext():
        if rank_zero:
            entry.validate(indices.size)
        missing = entry.missing_layers(layers)
        if missing:
            dm.configure(eval=eval_pipeline, predict_indices=indices)
            writer = FeatureShardWriter(work_dir, indices)
            trainer = make_trainer([writer])
            start = time.perf_counter()
            log.info("extracting %s for %d images ...", ", ".join(missing), indices.size)
            paths = extract_features(trainer, model, dm, writer, missing, entry.features_dir, key=entry.meta)
            elapsed = time.perf_counter() - start
            log.info("extracting %s done in %.2f s", ", ".join(missing), elapsed)
            if timings is not None:
                timings["extraction_s"] = timings.get("extraction_s", 0.0) + elapsed
            if paths is None:  # not rank zero: the embedding happens on rank zero only
                return None
            entry.write_index(labels, indices, names)
        else:
            log.info("features of %s reused from the cache %s", ", ".join(layers), entry.dir)
            if not rank_zero:
                return None
        return entry.link_into(run_features, layers)


def cache_entry(cache_dir: str | None, use_cache: bool, meta: dict[str, Any], run_dir: Path) -> FeatureCacheEntry:
    """The cache entry for ``meta`` under ``cache_dir`` (default root); with ``use_cache`` off,
    a private entry inside the run directory."""
    return FeatureCacheEntry(Path(cache_dir) if cache_dir else default_cache_root(), meta,
                             dir=None if use_cache else run_dir / "feature_cache")


CHUNK = 8192


def nonfinite_rows(features: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Indices of the rows holding NaN or inf, read ``chunk`` rows at a time (a memmap is
    never loaded whole)."""
    bad = [np.flatnonzero(~np.isfinite(np.asarray(features[s:s + chunk])).all(axis=1)) + s
           for s in range(0, len(features), chunk)]
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


@dataclass(frozen=True)
class FeatureSet:
    """One model's features of a subset, checked finite: ``paths[layer]`` is the run's
    ``<layer>.npy`` (row ``i`` = subset sample ``i``), ``cache_dir`` the cache entry they came
    from, ``extraction_s`` the time spent extracting (0 when all came from the cache)."""

    owner: str
    paths: dict[str, Path]
    cache_dir: Path | None = None
    extraction_s: float = 0.0

    @classmethod
    def open(cls, owner: str, paths: Mapping[str, Path], names: Sequence[str], **kw: Any) -> FeatureSet:
        """The features at ``paths``, refused (naming layer, rows and samples) when any row of
        any layer holds NaN or inf, so a bad later layer never leaves healthy plots behind."""
        problems = []
        for layer, path in paths.items():
            feats = np.load(path, mmap_mode="r")
            bad = nonfinite_rows(feats)
            if bad.size:
                shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
                problems.append(f"layer {layer!r} of {owner}: features contain NaN or inf values in {bad.size} "
                                f"of {len(feats)} rows (row indices: {shown}; first samples: "
                                f"{', '.join(names[i] for i in bad[:3])})")
        if problems:
            raise ValueError("; ".join(problems) + ". Nothing was embedded or plotted. Check the "
                             "model/layer that produced them (e.g. fp16 overflow, a broken checkpoint).")
        return cls(owner, dict(paths), **kw)

    @property
    def layers(self) -> list[str]:
        return list(self.paths)

    def array(self, layer: str) -> np.ndarray:
        """The layer's (N, D) features, memory-mapped."""
        return np.load(self.paths[layer], mmap_mode="r")


def subset_features(model: Any, model_cfg: DictConfig, dataset_cfg: DictConfig, trainer_cfg: DictConfig,
                    dm: Any, data: Any, subset: Any, *, layers: Sequence[str], init_seed: int, final_norm: bool,
                    cache: bool, cache_dir: str | None, private_dir: Path, features_dir: Path,
                    work_dir: Path, make_trainer: Callable[[list[pl.Callback]], pl.Trainer],
                    owner: str | None = None) -> FeatureSet | None:
    """``model``'s ``layers`` for ``subset`` (of ``data``, split ``subset.split`` of ``dm``):
    the cache entry keyed by everything they depend on (a private one in ``private_dir`` with
    ``cache`` off), the missing layers extracted by every rank, linked into ``features_dir``
    and checked finite (errors name ``owner``, default the model's name). None on ranks other
    than zero (they only take part in extraction)."""
    pipeline, preprocessing = eval_preprocessing(model_cfg, dm)
    entry = cache_entry(cache_dir, cache, feature_cache_meta(
        model_cfg, dataset_cfg, init_seed, subset.split, subset.indices, model.pooling, final_norm, data,
        preprocessing, compute_key(trainer_cfg, dataset_cfg, pipeline, data)), private_dir)
    timings: dict[str, float] = {}
    paths = obtain_features(entry, use_cache=cache, layers=layers, model=model, dm=dm, eval_pipeline=pipeline,
                            indices=subset.indices, labels=subset.labels, names=subset.names, work_dir=work_dir,
                            run_features=features_dir, make_trainer=make_trainer, timings=timings)
    if paths is None:
        return None
    return FeatureSet.open(owner or model.model_name, paths, subset.names, cache_dir=entry.dir,
                           extraction_s=timings.get("extraction_s", 0.0))
