"""From a config to cached features on disk: the subset, the cache key and the extraction.

Shared by every task that embeds or compares features (``task=tsne``,
``task=compare_embeddings``), so that they select the same samples for the same settings, key
the cache identically (a comparison reuses what a tsne run extracted, and the other way round)
and extract each (model, checkpoint, layer) once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

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


def select_subset(
    labels: np.ndarray,
    n_classes: int,
    max_num_class: int | None,
    class_idx: list[int] | None,
    max_samples_per_class: int | None,
    sampling: str,
    seed: int,
) -> np.ndarray:
    """Sorted dataset indices: the first ``max_num_class`` classes (or ``class_idx``), at most
    ``max_samples_per_class`` each (seeded random or first-N)."""
    labels = np.asarray(labels)
    if class_idx:
        bad = [c for c in class_idx if not 0 <= c < n_classes]
        if bad:
            raise ValueError(f"task.class_idx {bad} out of range: the dataset has {n_classes} classes (0..{n_classes - 1})")
        chosen = list(dict.fromkeys(class_idx))
    else:
        chosen = list(range(min(max_num_class or n_classes, n_classes)))
    rng = np.random.default_rng(seed)
    picked = []
    for c in chosen:
        members = np.flatnonzero(labels == c)
        if max_samples_per_class and members.size > max_samples_per_class:
            if sampling == "random":
                members = rng.choice(members, max_samples_per_class, replace=False)
            else:
                members = members[:max_samples_per_class]
        picked.append(members)
    indices = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    if indices.size == 0:
        raise ValueError(f"t-SNE subset is empty (classes {chosen[:10]} have no samples)")
    return indices


def eval_preprocessing(model_cfg: DictConfig, dm: Any) -> tuple[Any, dict[str, Any]]:
    """The model's eval pipeline on ``dm`` and its description (part of the cache key)."""
    pipeline = pipeline_for_model(model_cfg, "eval", crop_pct=dm.eval_crop_pct)
    described = {"pipeline": pipeline.describe(), "img_size": int(model_cfg.img_size),
                 "mean": list(pipeline.mean), "std": list(pipeline.std), "eval_crop_pct": dm.eval_crop_pct}
    return pipeline, described


def feature_cache_meta(model_cfg: DictConfig, dataset_cfg: DictConfig, init_seed: int, split: str,
                       indices: np.ndarray, pooling: str | None, final_norm: bool, base: Any,
                       preprocessing: dict[str, Any]) -> dict[str, Any]:
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
    entry = FeatureCacheEntry(Path(cache_dir) if cache_dir else default_cache_root(), meta)
    if not use_cache:
        entry.dir = run_dir / "feature_cache"
        entry.features_dir = entry.dir / "features"
    return entry
