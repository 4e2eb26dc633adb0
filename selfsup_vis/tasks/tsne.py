"""task=tsne: per-layer features → 2-D embeddings, quality numbers, plots and projector export.

config → data subset (seeded) → model → features (Trainer.predict, streamed, DDP-exact,
cached) → one embedding per layer (openTSNE / sklearn / PCA / UMAP) → quality numbers,
coordinates, figures → loggers (figures, scalars, TensorBoard projector, W&B table).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from selfsup_vis.data.datamodule import ImageDataModule
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding, resolve_backend
from selfsup_vis.embedding.plots import plot_embedding, plot_embedding_grid
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.features.cache import (
    FeatureCacheEntry,
    checkpoint_fingerprint,
    default_cache_root,
    indices_digest,
)
from selfsup_vis.features.extraction import extract_features, layer_file_name
from selfsup_vis.models import build_model
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.tasks.common import (
    TaskRun,
    build_trainer,
    is_global_zero,
    phase,
    )
from selfsup_vis.utils.io import save_npy, write_with

log = logging.getLogger(__name__)
RANK_METRIC = "knn_feat@20"


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


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


def _cache_meta(cfg: DictConfig, split: str, indices: np.ndarray, pooling: str | None,
                final_norm: bool) -> dict[str, Any]:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    checkpoint = model.pop("checkpoint", None)
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
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
    }


def _embed_params(t: DictConfig) -> EmbedParams:
    return EmbedParams(
        backend=str(_value(t.backend)),
        seed=int(t.seed),
        perplexity=float(t.perplexity),
        pca_dims=t.pca_dims,
        n_iter=t.n_iter,
        learning_rate=t.learning_rate,
        init=t.init,
        early_exaggeration=float(t.early_exaggeration),
        n_jobs=int(t.n_jobs),
    )


def _save_coords(out: Path, layer: str, coords: np.ndarray, labels: np.ndarray, names: list[str],
                 classes: list[str]) -> list[Path]:
    name = layer_file_name(layer)
    npy = save_npy(out / f"embedding_{name}.npy", coords.astype(np.float32))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "class", "x", "y"])
            for n, lab, (x, y) in zip(names, labels, coords):
                w.writerow([n, int(lab), classes[int(lab)], f"{x:.6g}", f"{y:.6g}"])

    return [npy, write_with(out / f"embedding_{name}.csv", write_csv)]


def _export_projector(loggers: list, features: dict[str, np.ndarray], labels: np.ndarray,
                      names: list[str], classes: list[str], coords: dict[str, np.ndarray],
                      dataset, pick: np.ndarray, sprite_size: int) -> None:
    """TensorBoard projector (features, class metadata, thumbnail sprite) and W&B tables."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    tb = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    wb = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not tb and not wb:
        return
    if tb:
        import torch
        from torchvision.transforms.v2.functional import pil_to_tensor, resize

        thumbs = torch.stack(
            [resize(pil_to_tensor(dataset.load_image(int(i))), [sprite_size, sprite_size], antialias=True)
             for i in pick]
        ).float() / 255.0
        meta = [[classes[int(labels[j])], names[j]] for j in range(len(labels))]
        for layer, feats in features.items():
            for lg in tb:
                lg.experiment.add_embedding(
                    np.asarray(feats), metadata=[meta[j] for j in range(len(meta))],
                    metadata_header=["class", "path"], label_img=thumbs, tag=f"tsne/{layer}", global_step=0,
                )
    for lg in wb:
        import wandb

        for layer, xy in coords.items():
            table = wandb.Table(columns=["path", "class", "x", "y"],
                                data=[[names[j], classes[int(labels[j])], float(x), float(y)]
                                      for j, (x, y) in enumerate(xy)])
            lg.experiment.log({f"tsne/{layer}/table": table})


def _replot(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    """Redraw the figures of an earlier run from its saved coordinates (no recomputation)."""
    import json

    t = cfg.task
    if not t.from_dir:
        raise ValueError("task.replot=true needs task.from_dir=<an earlier tsne run directory>")
    src = Path(t.from_dir)
    summary_file = src / "summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"task.from_dir: no summary.json in {src}")
    old = json.loads(summary_file.read_text())
    classes = old["classes"]
    loggers = run.loggers
    panels, qualities = [], {}
    out = run.dir
    for layer, info in old["layers"].items():
        rows = list(csv.DictReader(open(src / f"embedding_{layer_file_name(layer)}.csv")))
        coords = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32)
        labels = np.array([int(r["label"]) for r in rows])
        fig = plot_embedding(coords, labels, classes, f"{old['model']} · {layer}", info["quality"])
        save_figure(fig, out / f"tsne_{layer_file_name(layer)}", t.formats)
        log_figure(loggers, f"tsne/{layer}", fig)
        panels.append((layer, coords))
        qualities[layer] = info["quality"]
    grid = plot_embedding_grid(panels, labels, classes, qualities)
    save_figure(grid, out / "tsne_grid", t.formats)
    log_figure(loggers, "tsne/grid", grid)
    summary = {**old, "replotted_from": str(src)}
    run.write_summary(summary)
    return summary


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    if t.replot:
        return _replot(cfg, run)
    out = run.dir
    dm: ImageDataModule = hydra.utils.instantiate(cfg.dataset)
    split = t.split or dm.eval_split
    dm.eval_split = split
    base = dm.dataset(split)
    classes = base.classes
    indices = select_subset(
        np.asarray(base.labels), len(classes), t.max_num_class, list(t.class_idx) if t.class_idx else None,
        t.max_samples_per_class, str(_value(t.sampling)), int(t.seed),
    )
    labels = np.asarray(base.labels)[indices]
    names = [base.names[i] for i in indices]
    log.info("t-SNE subset: %d samples of %d classes from %s/%s", indices.size, np.unique(labels).size, dm.name, split)

    model = build_model(cfg.model)
    if t.pooling:
        model.pooling = str(t.pooling)
    model.final_norm_blocks = bool(t.final_norm)
    layers = list(t.layers) or model.default_layers()
    for layer in layers:
        model._parse_layer(layer)  # unknown names fail here, listing the valid ones
        if t.final_norm and layer.startswith("block"):
            model._final_norm(layer)  # a backbone without a final norm fails here

    entry = FeatureCacheEntry(Path(t.cache_dir) if t.cache_dir else default_cache_root(),
                              _cache_meta(cfg, split, indices, model.pooling, bool(t.final_norm)))
    if not t.cache:
        entry.dir = out / "feature_cache"
        entry.features_dir = entry.dir / "features"
    if is_global_zero():
        entry.validate(indices.size)
    missing = entry.missing_layers(layers)
    timings: dict[str, float] = {"extraction_s": 0.0}
    if missing:
        dm.set_pipelines(eval=pipeline_for_model(cfg.model, "eval", crop_pct=dm.eval_crop_pct))
        trainer = build_trainer(cfg, None, enable_checkpointing=False)
        start = time.perf_counter()
        with phase(f"extracting {', '.join(missing)} for {indices.size} images"):
            paths = extract_features(trainer, model, dm, missing, indices, out / "_extract", entry.features_dir)
        timings["extraction_s"] = time.perf_counter() - start
        if paths is None:  # not rank zero: the embedding happens on rank zero only
            return {}
        entry.write_index(labels, indices, names)
    else:
        log.info("features of %s reused from the cache %s", ", ".join(layers), entry.dir)
        if not is_global_zero():
            return {}
    entry.link_into(out / "features", layers)
    save_npy(out / "labels.npy", labels)
    (out / "paths.txt").write_text("".join(f"{n}\n" for n in names))

    loggers = run.loggers
    params = _embed_params(t)
    results, panels, qualities, coords_by_layer, feats_by_layer = {}, [], {}, {}, {}
    for layer in tqdm(layers, desc="embedding layers", unit="layer", disable=len(layers) < 2):
        feats = np.load(entry.layer_path(layer), mmap_mode="r")
        with phase(f"embedding {layer} ({feats.shape[0]}×{feats.shape[1]}) with {resolve_backend(params.backend)}"):
            try:
                res = compute_embedding(np.asarray(feats, dtype=np.float32), params)
            except ValueError as err:
                raise ValueError(f"layer {layer!r} of {model.model_name}: {err}") from err
        quality = embedding_quality(np.asarray(feats), res.coords, labels, seed=int(t.seed))
        files = _save_coords(out, layer, res.coords, labels, names, classes)
        fig = plot_embedding(res.coords, labels, classes, f"{model.model_name} · {layer}", quality)
        files += save_figure(fig, out / f"tsne_{layer_file_name(layer)}", t.formats)
        log_figure(loggers, f"tsne/{layer}", fig)
        log_scalars(loggers, {f"tsne/{layer}/{k}": v for k, v in quality.items() if isinstance(v, (int, float))})
        results[layer] = {
            "quality": quality,
            "embedding": res.params,
            "embedding_s": res.seconds,
            "feature_dim": int(feats.shape[1]),
            "files": [str(f) for f in files],
        }
        panels.append((layer, res.coords))
        qualities[layer] = quality
        coords_by_layer[layer] = res.coords
        feats_by_layer[layer] = feats
    grid = plot_embedding_grid(panels, labels, classes, qualities)
    save_figure(grid, out / "tsne_grid", t.formats)
    log_figure(loggers, "tsne/grid", grid)
    if t.projector:
        cap = min(indices.size, int(t.projector_max_samples))
        pick = np.sort(np.random.default_rng(int(t.seed)).choice(indices.size, cap, replace=False))
        with phase("exporting embeddings to the projector"):
            _export_projector(loggers, {k: np.asarray(v)[pick] for k, v in feats_by_layer.items()},
                              labels[pick], [names[i] for i in pick], classes,
                              {k: v[pick] for k, v in coords_by_layer.items()}, base, indices[pick],
                              int(t.sprite_size))
    ranking = sorted(
        layers,
        key=lambda la: (-np.nan_to_num(qualities[la].get(RANK_METRIC, np.nan), nan=-1.0),
                        -qualities[la].get("trustworthiness", 0.0)),
    )
    summary = {
        "task": "tsne",
        "model": model.model_name,
        "checkpoint": cfg.model.get("checkpoint"),
        "dataset": dm.name,
        "split": split,
        "n_samples": int(indices.size),
        "classes": classes,
        "seed": int(t.seed),
        "feature_cache": str(entry.dir),
        "timings": {**timings, "embedding_s": sum(r["embedding_s"] for r in results.values())},
        "layers": results,
        "ranking": [{"layer": la, RANK_METRIC: qualities[la].get(RANK_METRIC),
                     "trustworthiness": qualities[la].get("trustworthiness")} for la in ranking],
    }
    run.write_summary(summary)
    return summary
