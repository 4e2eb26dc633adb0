"""task=tsne: per-layer features → 2-D embeddings, quality numbers, plots and projector export.

config → data subset (seeded) → model → features (Trainer.predict, streamed, DDP-exact,
cached) → one embedding per layer (openTSNE / sklearn / PCA / UMAP) → quality numbers,
coordinates, figures → loggers (figures, scalars, TensorBoard projector, W&B table).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from selfsup_vis.checkpoints.provenance import (
    Provenance,
    check_random_parts,
    layer_parts,
    model_provenance,
)
from selfsup_vis.data.datamodule import ImageDataModule
from selfsup_vis.data.folders import unreadable_images
from selfsup_vis.embedding.backends import (
    EmbedParams,
    compute_embedding,
    embed_params_from_config,
    resolve_backend,
)
from selfsup_vis.embedding.labels import (
    footer_text,
    labeling_values,
    parse_labeling_specs,
    quality_for,
    resolve_labelings,
)
from selfsup_vis.embedding.large import optimised_mask, placement_note
from selfsup_vis.embedding.plots import plot_embedding, plot_embedding_grid
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.sampled_quality import placement_knn, sampled_quality
from selfsup_vis.embedding.space import describe_space
from selfsup_vis.embedding.thumbnails import load_thumbnails
from selfsup_vis.features.external import FeatureShards, load_labels
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.features.pipeline import (  # select_subset: re-exported for callers of tasks.tsne
    cache_entry,
    eval_preprocessing,
    feature_cache_meta,
    obtain_features,
    select_subset,
)
from selfsup_vis.models import build_model
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.report.exports import write_embedding_exports
from selfsup_vis.tasks.common import (
    TaskRun,
    build_trainer,
    phase,
)
from selfsup_vis.utils.io import save_npy, write_text, write_with

log = logging.getLogger(__name__)
RANK_METRIC = "knn_feat@20"


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


def _check_finite_layers(paths: dict[str, Path], names: list[str], model_name: str) -> None:
    """Every requested layer's features must be finite before anything is drawn, so a bad
    later layer never leaves the healthy layers' plots behind."""
    problems = []
    for layer, path in paths.items():
        feats = np.load(path, mmap_mode="r")
        bad = np.concatenate([np.flatnonzero(~np.isfinite(feats[s:s + 8192]).all(axis=1)) + s
                              for s in range(0, len(feats), 8192)] or [np.zeros(0, np.int64)])
        if bad.size:
            shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
            problems.append(f"layer {layer!r} of {model_name}: features contain NaN or inf values in "
                            f"{bad.size} of {len(feats)} rows (row indices: {shown}; first samples: "
                            f"{', '.join(names[i] for i in bad[:3])})")
    if problems:
        raise ValueError("; ".join(problems) + ". Nothing was embedded or plotted. Check the "
                         "model/layer that produced them (e.g. fp16 overflow, a broken checkpoint).")


def _embed_params(t: DictConfig) -> EmbedParams:
    return embed_params_from_config(t, init=t.init)  # shared with task=compare_embeddings


def _save_coords(out: Path, layer: str, coords: np.ndarray, labels: np.ndarray, names: list[str],
                 classes: list[str]) -> list[Path]:
    name = layer_file_name(layer)
    npy = save_npy(out / f"embedding_{name}.npy", coords.astype(np.float32))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
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

        thumbs = None if dataset is None else torch.stack(  # task.features: no images
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
    prov = run.set_provenance(
        Provenance.from_dict({**old["provenance"], "sources": [str(src)]}) if "provenance" in old else
        Provenance(task="tsne", model=str(old.get("model")), weights="unknown (replotted from a run "
                   "without provenance)", sources=[str(src)]))
    loggers = run.loggers
    panels, qualities = [], {}
    out = run.dir
    for layer, info in old["layers"].items():
        rows = list(csv.DictReader(open(src / f"embedding_{layer_file_name(layer)}.csv")))
        coords = np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32)
        labels = np.array([int(r["label"]) for r in rows])
        fig = plot_embedding(coords, labels, classes, f"{old['model']} · {layer}", info["quality"])
        add_provenance(fig, prov.replace(layer=layer))
        save_figure(fig, out / f"tsne_{layer_file_name(layer)}", t.formats)
        log_figure(loggers, f"tsne/{layer}", fig)
        panels.append((layer, coords))
        qualities[layer] = info["quality"]
    grid = plot_embedding_grid(panels, labels, classes, qualities)
    add_provenance(grid, prov)
    save_figure(grid, out / "tsne_grid", t.formats)
    log_figure(loggers, "tsne/grid", grid)
    summary = {**old, "replotted_from": str(src)}
    run.write_summary(summary)
    return summary


def _run_features(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    """task.features=<.npy | folder of shards>: embed → quality → figure → summary on features
    the user already has. No data, model or extraction; the features are memory-mapped
    and, from task.large_n rows on, read in chunks and never copied whole."""
    t = cfg.task
    out = run.dir
    feats = FeatureShards(t.features)  # shapes, dtypes and lengths are checked before any work
    n = len(feats)
    classes = t.classes if t.classes is None or isinstance(t.classes, str) else [str(c) for c in t.classes]
    lab = load_labels(t.labels, n, classes=classes, paths=t.paths)
    labels = lab.labels if lab.source is not None else None
    names = lab.paths or [str(i) for i in range(n)]
    layer = feats.source.stem if feats.source.is_file() else feats.source.name
    prov = run.set_provenance(Provenance(
        task="tsne", model="precomputed features", weights=f"features {feats.source}", layer=layer,
        seed=int(t.seed), dataset=str(lab.source) if lab.source else "unlabelled", n=n,
        sources=[str(feats.source)] + ([str(lab.source)] if lab.source else [])))
    params = _embed_params(t)
    large = params.large_n is not None and n >= params.large_n
    x = feats if large else feats.load()
    log.info("task.features: %s (%d×%d, %.2f GB on disk), %s path", feats, n, feats.dim,
             feats.nbytes_on_disk / 1e9, "memory-bounded" if large else "in-memory")
    with phase(f"embedding {layer} ({n}×{feats.dim}) with {resolve_backend(params.backend)}"):
        try:
            res = compute_embedding(x, params)
        except ValueError as err:
            raise ValueError(f"task.features={feats.source}: {err}") from err
    optimised = optimised_mask(n, res.params.get("large", {}))  # None unless rows were placed
    if optimised is not None:  # which rows the t-SNE optimised (the others were placed)
        res.params["large"]["optimised_rows_file"] = str(save_npy(out / "optimised_rows.npy", np.flatnonzero(optimised)))
    with phase("quality numbers"):
        if n > int(t.quality_sample) or optimised is not None:  # over all N, placed and optimised
            quality = sampled_quality(feats, res.coords, labels, seed=int(t.seed), sample=int(t.quality_sample),
                                      metric=params.metric, standardize=params.standardize, optimised=optimised)
        else:
            quality = embedding_quality(x if not large else feats.load(), res.coords, labels, seed=int(t.seed),
                                        metric=params.metric, standardize=params.standardize)
    with phase("coordinates (.npy, .csv)"):
        files = _save_coords(out, layer, res.coords, lab.labels, names, lab.classes)
    with phase("figure"):
        sub = quality.get("quality_subsample")
        title = f"{layer} · n={n}" + (f" · quality on {sub['n']} sampled" if sub and sub["n"] < n else "")
        note = placement_note(res.params.get("large", {}), quality)
        fig = plot_embedding(res.coords, labels, lab.classes, title, quality, density=t.density,
                             footer=res.params["space"] + (f"\n{note}" if note else ""))
        add_provenance(fig, prov)
        files += save_figure(fig, out / f"tsne_{layer_file_name(layer)}", t.formats)
        log_figure(run.loggers, f"tsne/{layer}", fig)
    log_scalars(run.loggers, {f"tsne/{layer}/{k}": v for k, v in quality.items() if isinstance(v, int | float)})
    projector = None
    if t.projector:
        cap = min(n, int(t.projector_max_samples))
        pick = np.sort(np.random.default_rng(int(t.seed)).choice(n, cap, replace=False))
        save_npy(out / "projector_sample.npy", pick)
        projector = {"n": int(cap), "of": n, "seed": int(t.seed), "rows_file": str(out / "projector_sample.npy")}
        with phase("exporting a sample to the projector"):
            _export_projector(run.loggers, {layer: feats.take(pick)}, lab.labels[pick], [names[i] for i in pick],
                              lab.classes, {layer: res.coords[pick]}, None, pick, int(t.sprite_size))
    summary = {
        "task": "tsne", "model": "precomputed features", "features": str(feats.source),
        "feature_files": [str(sh.path) for sh in feats.shards], "labels_file": str(lab.source) if lab.source else None,
        "n_samples": n, "feature_dim": feats.dim, "classes": lab.classes, "seed": int(t.seed),
        "space": res.params["space"], "metric": params.metric, "standardize": params.standardize,
        "projector": projector, "timings": {"embedding_s": res.seconds},
        "layers": {layer: {"quality": quality, "embedding": res.params, "embedding_s": res.seconds,
                           "feature_dim": feats.dim, "files": [str(f) for f in files]}},
    }  # fmt: skip
    run.write_summary(summary)
    return summary


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    if t.replot:
        return _replot(cfg, run)
    if t.features:
        return _run_features(cfg, run)
    out = run.dir
    label_specs = parse_labeling_specs(str(t.color_by), list(t.extra_labels))  # checked before work
    split = t.split or cfg.dataset.eval_split
    dm: ImageDataModule = hydra.utils.instantiate(cfg.dataset, eval_split=split)
    base = dm.dataset(split)
    classes = base.classes
    indices = select_subset(
        np.asarray(base.labels), len(classes), t.max_num_class, list(t.class_idx) if t.class_idx else None,
        t.max_samples_per_class, str(_value(t.sampling)), int(t.seed),
    )
    skipped: list[dict[str, Any]] = []
    if getattr(base, "skip_corrupt", False):  # drop unreadable images before extraction
        with phase(f"checking that the {indices.size} images decode (dataset.skip_corrupt=true)"):
            skipped = unreadable_images(base, indices)
        if skipped:
            log.warning("dataset.skip_corrupt=true: leaving out %d unreadable image(s): %s",
                        len(skipped), "; ".join(s["error"] for s in skipped[:5]))
            indices = np.setdiff1d(indices, [s["index"] for s in skipped])
            if indices.size == 0:
                raise ValueError("t-SNE subset is empty: every selected image is unreadable "
                                 "(dataset.skip_corrupt=true skipped them all)")
    labels = np.asarray(base.labels)[indices]
    names = [base.names[i] for i in indices]
    log.info("t-SNE subset: %d samples of %d classes from %s/%s", indices.size, np.unique(labels).size, dm.name, split)
    colour, labelings = resolve_labelings(label_specs, names, labels, classes)

    # layers, pooling and final norm go through the constructor, which validates them (an
    # unknown layer, a pooling the model cannot do or a missing final norm fail here)
    model = build_model(cfg.model, predict_layers=list(t.layers) or None, pooling=t.pooling,
                        final_norm_blocks=bool(t.final_norm))
    layers = list(model.predict_layers)
    # a checkpoint without the requested layers' weights (a MoCo neck) is refused before work
    random_parts = check_random_parts(model, layer_parts(model, layers), f"task.layers={layers}",
                                      allow=bool(cfg.model.get("allow_random_parts", False)))
    prov = run.set_provenance(model_provenance(
        "tsne", cfg.model, model, init_seed=int(cfg.seed), random_parts=random_parts,
        layer=", ".join(layers), seed=int(t.seed), dataset=dm.name, split=split, n=int(indices.size)))

    eval_pipeline, preprocessing = eval_preprocessing(cfg.model, dm)
    entry = cache_entry(t.cache_dir, bool(t.cache), feature_cache_meta(
        cfg.model, cfg.dataset, int(cfg.seed), split, indices, model.pooling, bool(t.final_norm), base,
        preprocessing), out)
    timings: dict[str, float] = {"extraction_s": 0.0}
    run_features = obtain_features(  # shared with task=compare_embeddings (features/pipeline.py)
        entry, use_cache=bool(t.cache), layers=layers, model=model, dm=dm, eval_pipeline=eval_pipeline,
        indices=indices, labels=labels, names=names, work_dir=out / "_extract", run_features=out / "features",
        make_trainer=lambda cbs: build_trainer(cfg, None, cbs, enable_checkpointing=False), timings=timings)
    if run_features is None:  # not rank zero: the embedding happens on rank zero only
        return {}
    save_npy(out / "labels.npy", labels)
    write_text(out / "paths.txt", "".join(f"{n}\n" for n in names))
    _check_finite_layers(run_features, names, model.model_name)

    loggers = run.loggers
    params = _embed_params(t)
    results, panels, qualities, coords_by_layer, feats_by_layer = {}, [], {}, {}, {}
    for layer in tqdm(layers, desc="embedding layers", unit="layer", disable=len(layers) < 2):
        feats = np.load(run_features[layer], mmap_mode="r")
        with phase(f"embedding {layer} ({feats.shape[0]}×{feats.shape[1]}) with {resolve_backend(params.backend)}"):
            try:
                res = compute_embedding(np.asarray(feats, dtype=np.float32), params)
            except ValueError as err:
                raise ValueError(f"layer {layer!r} of {model.model_name}: {err}") from err
        quality = embedding_quality(np.asarray(feats), res.coords, labels, seed=int(t.seed), metric=params.metric,
                                    standardize=params.standardize, extra_labels=labeling_values(labelings))
        optimised = optimised_mask(len(res.coords), res.params.get("large", {}))
        if optimised is not None:  # t-SNE optimised a sample (task.embed_sample), placed the rest
            quality.update(placement_knn(res.coords, labels, optimised, seed=int(t.seed), sample=int(t.quality_sample)))
        note = placement_note(res.params.get("large", {}), quality)
        files = _save_coords(out, layer, res.coords, labels, names, classes)
        thumbs = (load_thumbnails(res.coords, base.load_image, indices, int(t.thumbnail_grid),
                                  int(t.thumbnail_size), int(t.seed)) if t.thumbnails else None)
        fig = plot_embedding(res.coords, colour.values, colour.classes, f"{model.model_name} · {layer}",
                             quality_for(quality, colour),
                             footer=footer_text(res.params["space"], colour) + (f"\n{note}" if note else ""),
                             color_label=colour.name, thumbnails=thumbs, thumbnail_grid=int(t.thumbnail_grid))
        add_provenance(fig, prov.replace(layer=layer))
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
    grid = plot_embedding_grid(panels, colour.values, colour.classes,
                               {la: quality_for(q, colour) for la, q in qualities.items()},
                               footer=footer_text(describe_space(params.metric, params.standardize), colour),
                               color_label=colour.name)
    add_provenance(grid, prov)
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
    with phase("thumbnails for report.html" + (f" and exports {list(t.export)}" if t.export else "")):
        exports = write_embedding_exports(  # report hover thumbnails, Embedding Atlas parquet
            out, base.load_image, indices, labels, names, classes, coords_by_layer, feats_by_layer,
            [str(_value(e)) for e in t.export], int(t.report_thumbnails), int(t.thumbnail_size),
            int(t.atlas_neighbors), int(t.seed))
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
        "space": describe_space(params.metric, params.standardize),  # the embedding's and the numbers' space
        "metric": params.metric,
        "standardize": params.standardize,
        "color_by": colour.name,
        "labelings": {lab.name: lab.summary() for lab in (colour, *labelings.values())},
        "feature_cache": str(entry.dir),
        "exports": exports,
        "skipped_corrupt": skipped,
        "decode": getattr(getattr(dm, "gpu_decode", None), "used", None),
        "timings": {**timings, "embedding_s": sum(r["embedding_s"] for r in results.values())},
        "layers": results,
        "ranking": [{"layer": la, RANK_METRIC: qualities[la].get(RANK_METRIC),
                     "trustworthiness": qualities[la].get("trustworthiness")} for la in ranking],
    }
    run.write_summary(summary)
    return summary
