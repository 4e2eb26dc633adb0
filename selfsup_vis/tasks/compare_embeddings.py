"""task=compare_embeddings: several models / checkpoints on the same subset, side by side.

config → models composed from the ``model`` group (checked before work) → the data subset
(task=tsne's selection) → per model the features of every compared layer (task=tsne's cached,
DDP-exact extraction: a comparison reuses what tsne extracted and the other way round) → per
(model, layer) an embedding from one shared initialisation, Procrustes-aligned to the first
model's panel map → aligned panels, quality-by-depth curves and linear CKA heatmaps, with every
number saved (coordinates, ``layer_curves.csv``, ``cka_<a>__<b>.csv``, summary.json).
"""

from __future__ import annotations

import csv
import logging
import re
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.decomposition import PCA

from selfsup_vis.checkpoints.provenance import (
    Provenance,
    check_random_parts,
    layer_parts,
    model_provenance,
    warn_if_random,
)
from selfsup_vis.config.compare import compose_model_config
from selfsup_vis.data.datamodule import ImageDataModule
from selfsup_vis.embedding.backends import compute_embedding, embed_params_from_config
from selfsup_vis.embedding.compare import cka_matrix, procrustes_align
from selfsup_vis.embedding.compare_plots import (
    plot_aligned_panels,
    plot_cka_heatmap,
    plot_layer_curves,
)
from selfsup_vis.embedding.labels import (
    footer_text,
    labeling_values,
    parse_labeling_specs,
    quality_for,
    resolve_labelings,
)
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.space import describe_space, to_metric_space
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.features.pipeline import (
    cache_entry,
    eval_preprocessing,
    feature_cache_meta,
    obtain_features,
    select_subset,
)
from selfsup_vis.features.pixels import PIXELS, pixel_features
from selfsup_vis.models import build_model
from selfsup_vis.plotting.log import log_figure, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.tasks.common import TaskRun, build_trainer, is_global_zero, phase
from selfsup_vis.utils.io import save_npy, write_with

log = logging.getLogger(__name__)
INIT_STD = 1e-4  # openTSNE rescales its PCA initialisation to this standard deviation


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _file_label(checkpoint: str | None, parts: int = 1) -> str:
    """The checkpoint's last ``parts`` path components (skipping a ``checkpoints`` folder)."""
    if not checkpoint:
        return "RANDOM WEIGHTS"
    comps = [c for c in Path(str(checkpoint)).parts if c != "checkpoints"]
    return "/".join(comps[-parts:])


def _entries(cfg: DictConfig) -> list[dict[str, Any]]:
    """Every compared model as {name, model_cfg, layers, kind}: ``task.models``, else the run's
    model with each of ``task.checkpoints``, then the baselines. Composed (and so checked)
    before any work."""
    t = cfg.task
    out: list[dict[str, Any]] = []
    for i, e in enumerate(t.models):
        if e.model is None:
            mcfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
            if e.overrides:
                raise ValueError(f"task.models[{i}]: overrides need a model option (model: <name>)")
        else:
            mcfg = compose_model_config(str(e.model), list(e.overrides))
        with open_dict(mcfg):
            mcfg.checkpoint = e.checkpoint
        out.append({"name": e.name, "model_cfg": mcfg, "layers": list(e.layers) if e.layers else None,
                    "kind": "model"})
    if t.checkpoints:
        if t.models:
            raise ValueError("give either task.models or task.checkpoints (for the run's model=), not both")
        for ck in t.checkpoints:
            mcfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
            with open_dict(mcfg):
                mcfg.checkpoint = None if ck is None else str(ck)
            out.append({"name": None, "model_cfg": mcfg, "layers": None, "kind": "model"})
    if not out:
        raise ValueError("task=compare_embeddings needs models: task.models=[{model: <option>, checkpoint: "
                         "<file>}, ...] or task.checkpoints=[<file>, null, ...] for the run's model=")
    for e in out:
        ck = e["model_cfg"].get("checkpoint")
        if ck and "://" not in str(ck) and not Path(str(ck)).expanduser().is_file():
            raise FileNotFoundError(f"task=compare_embeddings: checkpoint {ck} of model "
                                    f"{e['model_cfg'].name} does not exist")
    for b in t.baselines:
        if str(_value(b)) == "random":
            mcfg = OmegaConf.create(OmegaConf.to_container(out[0]["model_cfg"], resolve=True))
            with open_dict(mcfg):
                mcfg.checkpoint = None
            out.append({"name": f"{mcfg.name} · RANDOM WEIGHTS (baseline)", "model_cfg": mcfg,
                        "layers": out[0]["layers"], "kind": "random"})
        else:
            out.append({"name": "raw pixels (baseline)", "model_cfg": None, "layers": [PIXELS], "kind": PIXELS})
    auto = [e for e in out if e["name"] is None]
    for parts in (1, 2, 3, 4):  # two runs' last.ckpt: name them by as much path as tells them apart
        for e in auto:
            e["name"] = f"{e['model_cfg'].name} · {_file_label(e['model_cfg'].get('checkpoint'), parts)}"
        if len({e["name"] for e in out}) == len(out):
            break
    names = [e["name"] for e in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"task=compare_embeddings: several models are named {dupes}; give each a name "
                         "(task.models=[{..., name: <label>}])")
    if len(out) < 2:
        raise ValueError("task=compare_embeddings needs at least two models (or a model and a baseline)")
    return out


def _save_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    return write_with(path, write)


def _shared_init(feats: np.ndarray, metric: str, standardize: bool, mode: str, seed: int) -> np.ndarray:
    """One (N, 2) starting layout for every map: PCA of the reference features (in the metric
    space) or a seeded Gaussian, scaled to openTSNE's standard deviation."""
    if mode == "random":
        init = np.random.default_rng(seed).normal(size=(feats.shape[0], 2))
    else:
        x = to_metric_space(np.asarray(feats, dtype=np.float32), metric, standardize)
        init = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, x]
    init = init - init.mean(axis=0)
    return (init / max(float(init[:, 0].std()), 1e-12) * INIT_STD).astype(np.float32)


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    out = run.dir
    start_all = time.perf_counter()
    label_specs = parse_labeling_specs(str(t.color_by), [])
    entries = _entries(cfg)
    split = t.split or cfg.dataset.eval_split
    dm: ImageDataModule = hydra.utils.instantiate(cfg.dataset, eval_split=split)
    base = dm.dataset(split)
    classes = base.classes
    indices = select_subset(
        np.asarray(base.labels), len(classes), t.max_num_class, list(t.class_idx) if t.class_idx else None,
        t.max_samples_per_class, str(_value(t.sampling)), int(t.seed))
    labels = np.asarray(base.labels)[indices]
    names = [base.names[i] for i in indices]
    colour, labelings = resolve_labelings(label_specs, names, labels, classes)
    log.info("comparison subset: %d samples of %d classes from %s/%s", indices.size, np.unique(labels).size,
             dm.name, split)

    # --- features: every model's layers, extracted once into the shared cache ------------------
    timings = {"extraction_s": 0.0, "embedding_s": 0.0, "cka_s": 0.0}
    provs: list[Provenance | None] = []
    features: list[dict[str, Path]] = []
    first_pipeline = None
    for i, e in enumerate(entries):
        if e["kind"] == PIXELS:
            provs.append(None)
            features.append({})
            continue
        mcfg = e["model_cfg"]
        torch.manual_seed(int(cfg.seed))  # random weights: the same init as task=tsne with this seed
        layers = e["layers"] or (list(t.layers) or None)
        model = build_model(mcfg, predict_layers=layers, pooling=t.pooling)
        if layers is None:
            model.configure_features(list(model.available_layers()))
        e["layers"] = list(model.predict_layers)
        e["panel_layer"] = t.panel_layer if t.panel_layer in e["layers"] else (
            model.default_layers()[0] if model.default_layers()[0] in e["layers"] else e["layers"][-1])
        random_parts = check_random_parts(model, layer_parts(model, e["layers"]), f"layers {e['layers']}",
                                          allow=bool(mcfg.get("allow_random_parts", False)))
        prov = model_provenance("compare_embeddings", mcfg, model, init_seed=int(cfg.seed),
                                random_parts=random_parts, seed=int(t.seed), dataset=dm.name, split=split,
                                n=int(indices.size))
        if e["kind"] == "model":
            warn_if_random(prov)
        provs.append(prov)
        pipeline, preprocessing = eval_preprocessing(mcfg, dm)
        first_pipeline = first_pipeline or pipeline
        entry = cache_entry(t.cache_dir, bool(t.cache), feature_cache_meta(
            mcfg, cfg.dataset, int(cfg.seed), split, indices, model.pooling, False, base, preprocessing),
            out / "models" / _slug(e["name"]))
        paths = obtain_features(
            entry, use_cache=bool(t.cache), layers=e["layers"], model=model, dm=dm, eval_pipeline=pipeline,
            indices=indices, labels=labels, names=names, work_dir=out / f"_extract_{i}",
            run_features=out / "features" / _slug(e["name"]),
            make_trainer=lambda cbs: build_trainer(cfg, None, cbs, enable_checkpointing=False), timings=timings)
        features.append(dict(paths) if paths is not None else {})
        del model
    if not is_global_zero():  # every rank took part in every extraction; rank zero does the rest
        return {}
    for i, e in enumerate(entries):
        if e["kind"] == PIXELS:
            with phase(f"raw pixels of {indices.size} images ({t.pixel_size}² per channel)"):
                px = pixel_features(base, indices, first_pipeline or eval_preprocessing(cfg.model, dm)[0],
                                    int(t.pixel_size))
            features[i] = {PIXELS: save_npy(out / "features" / PIXELS / "pixels.npy", px)}
            e["panel_layer"] = PIXELS
    loaded = [{la: np.load(p, mmap_mode="r") for la, p in f.items()} for f in features]
    for e, feats in zip(entries, loaded):
        for layer, x in feats.items():
            bad = np.flatnonzero(~np.isfinite(np.asarray(x)).all(axis=1))
            if bad.size:
                raise ValueError(f"{e['name']}, layer {layer!r}: NaN or inf features in {bad.size} rows "
                                 f"(row indices: {bad[:10].tolist()}; images: {[names[j] for j in bad[:3]]}); "
                                 "nothing was drawn")

    # --- embeddings from one shared initialisation, aligned to the first model's panel map ------
    params = embed_params_from_config(t)
    space = describe_space(params.metric, params.standardize)
    params.init = _shared_init(loaded[0][entries[0]["panel_layer"]], params.metric, params.standardize,
                               str(_value(t.init)), int(t.seed))
    extra = labeling_values(labelings)
    coords: list[dict[str, np.ndarray]] = []
    quality: list[dict[str, dict[str, Any]]] = []
    for e, feats in zip(entries, loaded):
        c_e, q_e = {}, {}
        for layer, x in feats.items():
            with phase(f"embedding {e['name']} · {layer} ({x.shape[0]}×{x.shape[1]})"):
                res = compute_embedding(np.asarray(x, dtype=np.float32), params)
            timings["embedding_s"] += res.seconds
            c_e[layer] = res.coords
            q_e[layer] = embedding_quality(np.asarray(x), res.coords, labels, seed=int(t.seed), metric=params.metric,
                                           standardize=params.standardize, extra_labels=extra)
        coords.append(c_e)
        quality.append(q_e)
    reference = coords[0][entries[0]["panel_layer"]]
    residuals: dict[str, dict[str, float]] = {}
    for e, c_e in zip(entries, coords):
        residuals[e["name"]] = {}
        for layer in c_e:
            pr = procrustes_align(c_e[layer], reference, scaling=True, reflection=True)
            c_e[layer] = pr.aligned.astype(np.float32)
            residuals[e["name"]][layer] = pr.residual
            save_npy(out / "embeddings" / _slug(e["name"]) / f"{layer_file_name(layer)}.npy", c_e[layer])

    # --- figures and numbers ------------------------------------------------------------------
    loggers = run.loggers
    names_list = [e["name"] for e in entries]
    weights = [p.weights if p is not None else "raw pixels (no weights)" for p in provs]
    prov = run.set_provenance(Provenance(
        task="compare_embeddings", model=" | ".join(names_list),
        weights="; ".join(f"{n}: {w}" for n, w in zip(names_list, weights)), seed=int(t.seed),
        dataset=dm.name, split=split, n=int(indices.size)))
    titles = [f"{e['name']}\n{e['panel_layer']}" + (" · RANDOM WEIGHTS" if p is not None and p.random and
                                                   "RANDOM" not in e["name"] else "")
              for e, p in zip(entries, provs)]
    panels = [(title, c_e[e["panel_layer"]]) for title, e, c_e in zip(titles, entries, coords)]
    fig = plot_aligned_panels(
        panels, colour.values, colour.classes,
        {title: quality_for(q_e[e["panel_layer"]], colour) for title, e, q_e in zip(titles, entries, quality)},
        [p is not None and p.random for p in provs], ncols=min(len(panels), 4),
        title=f"{len(entries)} models on the same {indices.size} images · aligned (orthogonal Procrustes) to "
              f"{entries[0]['name']}", footer=footer_text(space, colour) + " · shared initialisation",
        color_label=colour.name)
    add_provenance(fig, prov)
    files = save_figure(fig, out / "compare_panels", t.formats)
    log_figure(loggers, "compare/panels", fig)

    curves = {e["name"]: [(la, quality[i][la]) for la in e["layers"] if la in quality[i]]
              for i, e in enumerate(entries)}
    rows = [[e["name"], la, round(j / max(len(e["layers"]) - 1, 1), 4),
             *(quality[i][la].get(k) for k in ("knn_feat@10", "knn_feat@20", "knn_2d@10", "knn_2d@20",
                                               "trustworthiness"))]
            for i, e in enumerate(entries) for j, la in enumerate(e["layers"]) if la in quality[i]]
    files.append(_save_csv(out / "layer_curves.csv", ["model", "layer", "relative_depth", "knn_feat@10",
                                                      "knn_feat@20", "knn_2d@10", "knn_2d@20", "trustworthiness"],
                           rows))
    fig = plot_layer_curves(curves, title=f"quality by depth · space: {space} · labels: dataset classes")
    add_provenance(fig, prov)
    files += save_figure(fig, out / "layer_curves", t.formats)
    log_figure(loggers, "compare/layer_curves", fig)

    cka_results: dict[str, Any] = {}
    if t.cka:
        start = time.perf_counter()
        for a, b in combinations(range(len(entries)), 2):
            ea, eb = entries[a], entries[b]
            la, lb = list(loaded[a]), list(loaded[b])
            with phase(f"linear CKA {ea['name']} ({len(la)} layers) vs {eb['name']} ({len(lb)} layers)"):
                m = cka_matrix([loaded[a][x] for x in la], [loaded[b][x] for x in lb],
                               method=str(_value(t.cka_method)), batch_size=int(t.cka_batch_size), seed=int(t.seed))
            key = f"{_slug(ea['name'])}__{_slug(eb['name'])}"
            files.append(_save_csv(out / f"cka_{key}.csv", ["layer", *lb],
                                   [[x, *(f"{v:.6f}" for v in m[r])] for r, x in enumerate(la)]))
            fig = plot_cka_heatmap(m, la, lb, ea["name"], eb["name"])
            add_provenance(fig, prov)
            files += save_figure(fig, out / f"cka_{key}", t.formats)
            log_figure(loggers, f"compare/cka/{key}", fig)
            cka_results[key] = {"rows_model": ea["name"], "cols_model": eb["name"], "rows": la, "cols": lb,
                                "matrix": m.tolist()}
        timings["cka_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - start_all
    summary = {
        "task": "compare_embeddings",
        "dataset": dm.name,
        "split": split,
        "n_samples": int(indices.size),
        "classes": classes,
        "seed": int(t.seed),
        "space": space,
        "metric": params.metric,
        "standardize": params.standardize,
        "color_by": colour.name,
        "labelings": {lab.name: lab.summary() for lab in (colour, *labelings.values())},
        "initialisation": f"shared {_value(t.init)} (std {INIT_STD})",
        "alignment": f"orthogonal Procrustes (reflections, isotropic scale) onto {entries[0]['name']} · "
                     f"{entries[0]['panel_layer']}",
        "models": [{"name": e["name"], "kind": e["kind"], "model": None if e["model_cfg"] is None else
                    str(e["model_cfg"].name), "checkpoint": None if e["model_cfg"] is None else
                    e["model_cfg"].get("checkpoint"), "weights": w, "layers": e["layers"],
                    "panel_layer": e["panel_layer"]} for e, w in zip(entries, weights)],
        "quality": {e["name"]: quality[i] for i, e in enumerate(entries)},
        "procrustes_rms": residuals,
        "cka": cka_results,
        "timings": timings,
        "files": [str(f) for f in files],
    }
    run.write_summary(summary)
    return summary
