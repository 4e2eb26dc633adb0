"""task=compare_embeddings: several models / checkpoints on the same subset, side by side.

config → models composed from the ``model`` group (checked before work) → the data subset
(task=tsne's ``Subset.select``) → per model the features of every compared layer (task=tsne's
cached, DDP-exact extraction: a comparison reuses what tsne extracted and the other way round)
→ per (model, layer) a map from one shared initialisation (``embedding.compare.shared_init``),
Procrustes-aligned to the first model's panel map → aligned panels, quality-by-depth curves and
linear CKA heatmaps, with every number saved (coordinates, ``layer_curves.csv``,
``cka_<a>__<b>.csv``, summary.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from selfsup_vis.checkpoints.provenance import (
    Provenance,
    check_random_parts,
    layer_parts,
    model_provenance,
    warn_if_random,
)
from selfsup_vis.config.compare import compose_model_config
from selfsup_vis.embedding import (
    EmbedParams,
    LayerMap,
    footer_text,
    labeling_numbers,
    map_layer,
    parse_labeling_specs,
    quality_for,
    resolve_labelings,
    scoring,
)
from selfsup_vis.embedding.compare import INIT_STD, align_maps, cka_matrix, shared_init
from selfsup_vis.embedding.compare_plots import (
    plot_aligned_panels,
    plot_cka_heatmap,
    plot_layer_curves,
)
from selfsup_vis.features.cache import checkpoint_fingerprint
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.features.pipeline import FeatureSet, eval_preprocessing, subset_features
from selfsup_vis.features.pixels import PIXELS, pixel_features
from selfsup_vis.features.subset import Subset
from selfsup_vis.models import build_model
from selfsup_vis.report.summaries import CompareSummary
from selfsup_vis.tasks.common import TaskRun, build_trainer, is_global_zero, phase
from selfsup_vis.utils.io import save_npy, write_csv

log = logging.getLogger(__name__)

CURVE_KEYS = ("knn_feat@10", "knn_feat@20", "knn_2d@10", "knn_2d@20", "trustworthiness")


@dataclass(frozen=True)
class Entry:
    """One compared model as composed (and checked) before any work: its panel name, its
    model config (None for raw pixels), the layers asked for (None: every layer) and its kind
    (``model``, the ``random`` baseline or ``pixels``)."""

    name: str
    model_cfg: DictConfig | None
    layers: list[str] | None
    kind: str
    #: where its files go (features/, embeddings/, cka_*): :func:`_folder`
    folder: str = ""


@dataclass(frozen=True)
class Compared:
    """One model's share of the comparison: its layers, the layer of its panel, where its
    weights come from (None for pixels), its features and one map per layer."""

    entry: Entry
    layers: list[str]
    panel_layer: str
    provenance: Provenance | None
    features: FeatureSet
    maps: dict[str, LayerMap] | None = None
    residuals: dict[str, float] | None = None  # Procrustes RMS of each layer's map


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _folder(name: str, model_cfg: DictConfig | None, kind: str) -> str:
    """The folder of one compared model: its name made file-safe (for people) and a hash of
    (name, model config, checkpoint content), so that names differing only in characters a
    folder name drops (``fx 1``, ``fx_1``) never share features, and a model whose config or
    checkpoint changed never meets the old one's files (a resumed comparison extracts afresh)."""
    ident: dict[str, Any] = {"name": name, "kind": kind}
    if model_cfg is not None:
        model = OmegaConf.to_container(model_cfg, resolve=True)
        checkpoint = model.pop("checkpoint", None)  # type: ignore[union-attr]
        ident |= {"model": model, "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_fingerprint(checkpoint)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{_slug(name)[:40]}-{digest}"


def _stale_folders(out: Path, e: Entry) -> list[str]:
    """Folders of an earlier run in ``out`` under ``e``'s name with another config or checkpoint."""
    prefix = f"{_slug(e.name)[:40]}-"
    return sorted(p.name for p in (out / "features").glob(f"{prefix}*")
                  if p.name != e.folder and re.fullmatch(r"[0-9a-f]{10}", p.name[len(prefix):]))


def _file_label(checkpoint: str | None, parts: int = 1) -> str:
    """The checkpoint's last ``parts`` path components (skipping a ``checkpoints`` folder)."""
    if not checkpoint:
        return "RANDOM WEIGHTS"
    comps = [c for c in Path(str(checkpoint)).parts if c != "checkpoints"]
    return "/".join(comps[-parts:])


def _with_checkpoint(model_cfg: DictConfig, checkpoint: str | None) -> DictConfig:
    """A resolved copy of ``model_cfg`` with ``checkpoint`` (None: random weights)."""
    return OmegaConf.merge(OmegaConf.to_container(model_cfg, resolve=True), {"checkpoint": checkpoint})


def _entries(cfg: DictConfig) -> list[Entry]:
    """Every compared model (:class:`Entry`): ``task.models``, else the run's
    model with each of ``task.checkpoints``, then the baselines. Composed (and so checked)
    before any work."""
    t = cfg.task
    out: list[dict[str, Any]] = []
    for i, e in enumerate(t.models):
        if e.model is None and e.overrides:
            raise ValueError(f"task.models[{i}]: overrides need a model option (model: <name>)")
        mcfg = _with_checkpoint(cfg.model if e.model is None else
                                compose_model_config(str(e.model), list(e.overrides)), e.checkpoint)
        out.append({"name": e.name, "model_cfg": mcfg, "layers": list(e.layers) if e.layers else None,
                    "kind": "model"})
    if t.checkpoints:
        if t.models:
            raise ValueError("give either task.models or task.checkpoints (for the run's model=), not both")
        for ck in t.checkpoints:
            mcfg = _with_checkpoint(cfg.model, None if ck is None else str(ck))
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
            mcfg = _with_checkpoint(out[0]["model_cfg"], None)
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
    return [Entry(**e, folder=_folder(e["name"], e["model_cfg"], e["kind"])) for e in out]


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    start = time.perf_counter()
    label_specs = parse_labeling_specs(str(t.color_by), [])
    entries = _entries(cfg)  # composed and checked before any work
    split = t.split or cfg.dataset.eval_split
    dm = hydra.utils.instantiate(cfg.dataset, eval_split=split)
    data = dm.dataset(split)
    subset = Subset.select(data, t, dataset=dm.name, split=split)
    colour, labelings = resolve_labelings(label_specs, subset.names, subset.labels, subset.classes)

    # features: every model's layers, extracted once into the shared cache (every rank takes part)
    extracted = [_extract(cfg, e, dm, data, subset, run.dir) for e in entries if e.kind != PIXELS]
    if not is_global_zero():  # rank zero does the rest
        return {}
    models = [next(x for x in extracted if x.entry is e) if e.kind != PIXELS else
              _pixels(cfg, e, dm, data, subset, run.dir, entries) for e in entries]

    # maps from one shared initialisation, aligned onto the first model's panel map
    first = models[0]
    params = EmbedParams.from_config(t, init=shared_init(
        first.features.array(first.panel_layer), str(_value(t.metric)), bool(t.standardize),
        str(_value(t.init)), int(t.seed)))
    score = scoring(colour, labelings, subset.names)  # colour labeling's numbers; cue-conflict exclusion
    models = [_embed(m, params, score) for m in models]
    models = [_aligned(m, models[0].maps[first.panel_layer].coords, run.dir) for m in models]

    names = [m.entry.name for m in models]
    weights = [m.provenance.weights if m.provenance is not None else "raw pixels (no weights)" for m in models]
    run.set_provenance(Provenance(
        task="compare_embeddings", model=" | ".join(names),
        weights="; ".join(f"{n}: {w}" for n, w in zip(names, weights)), seed=int(t.seed),
        dataset=dm.name, split=split, n=subset.n))
    first = models[0]
    space = first.maps[first.panel_layer].params["space"]
    files = _panels(run, models, colour, subset, space) + _curves(run, models, space, colour.name)
    cka, cka_s = _cka(run, t, models, files) if t.cka else ({}, 0.0)

    summary = CompareSummary(
        dataset=dm.name, split=split, n_samples=subset.n, classes=subset.classes, seed=int(t.seed), space=space,
        metric=params.metric, standardize=params.standardize, color_by=colour.name,
        labelings=labeling_numbers(colour, labelings, {f"{m.entry.name} · {la}": lm.quality
                                                       for m in models for la, lm in m.maps.items()}),
        initialisation=f"shared {_value(t.init)} (std {INIT_STD})",
        alignment=f"orthogonal Procrustes (reflections, isotropic scale) onto {first.entry.name} · {first.panel_layer}",
        models=[{"name": m.entry.name, "kind": m.entry.kind,
                 "model": None if m.entry.model_cfg is None else str(m.entry.model_cfg.name),
                 "checkpoint": None if m.entry.model_cfg is None else m.entry.model_cfg.get("checkpoint"),
                 "weights": w, "layers": m.layers, "panel_layer": m.panel_layer, "folder": m.entry.folder}
                for m, w in zip(models, weights)],
        quality={m.entry.name: {la: lm.quality for la, lm in m.maps.items()} for m in models},
        procrustes_rms={m.entry.name: m.residuals for m in models}, cka=cka,
        timings={"extraction_s": sum(m.features.extraction_s for m in models),
                 "embedding_s": sum(lm.seconds for m in models for lm in m.maps.values()), "cka_s": cka_s,
                 "total_s": time.perf_counter() - start},
        files=[str(f) for f in files], method=first.maps[first.panel_layer].params["description"],
        knn_exclusion=score["exclusion_note"])
    return run.write_summary(summary)


def _extract(cfg: DictConfig, e: Entry, dm: Any, data: Any, subset: Subset, out: Path) -> Compared:
    """Build one model (random weights: the same init as task=tsne with this seed), record
    where its weights come from and extract its layers (every rank)."""
    t = cfg.task
    layers = e.layers or list(t.layers) or build_model(e.model_cfg, load=False, device="meta").available_layers()
    torch.manual_seed(int(cfg.seed))
    model = build_model(e.model_cfg, predict_layers=layers, pooling=t.pooling)
    layers = list(model.predict_layers)
    default = model.default_layers()[0]
    panel = t.panel_layer if t.panel_layer in layers else default if default in layers else layers[-1]
    random_parts = check_random_parts(model, layer_parts(model, layers), f"layers {layers}",
                                      allow=bool(e.model_cfg.get("allow_random_parts", False)))
    prov = model_provenance("compare_embeddings", e.model_cfg, model, init_seed=int(cfg.seed),
                            random_parts=random_parts, seed=int(t.seed), dataset=dm.name, split=subset.split,
                            n=subset.n)
    if e.kind == "model":
        warn_if_random(prov)
    stale = _stale_folders(out, e) if is_global_zero() else []
    if stale:
        log.warning("compare: %r now has another model config or checkpoint than the features in %s: "
                    "not reused, its features go to features/%s", e.name, ", ".join(f"features/{s}" for s in stale),
                    e.folder)
    features = subset_features(
        model, e.model_cfg, cfg.dataset, cfg.trainer, dm, data, subset, layers=layers, init_seed=int(cfg.seed),
        final_norm=False, cache=bool(t.cache), cache_dir=t.cache_dir, private_dir=out / "models" / e.folder,
        features_dir=out / "features" / e.folder, work_dir=out / f"_extract_{e.folder}", owner=e.name,
        make_trainer=lambda cbs: build_trainer(cfg, None, cbs, enable_checkpointing=False))
    return Compared(e, layers, panel, prov, features)  # type: ignore[arg-type]  # None off rank zero


def _pixels(cfg: DictConfig, e: Entry, dm: Any, data: Any, subset: Subset, out: Path,
            entries: list[Entry]) -> Compared:
    """The raw-pixel baseline through the first model's eval pipeline."""
    model_cfg = next((x.model_cfg for x in entries if x.model_cfg is not None), cfg.model)
    with phase(f"raw pixels of {subset.n} images ({cfg.task.pixel_size}² per channel)"):
        px = pixel_features(data, subset.indices, eval_preprocessing(model_cfg, dm)[0], int(cfg.task.pixel_size))
    path = save_npy(out / "features" / e.folder / "pixels.npy", px)
    return Compared(e, [PIXELS], PIXELS, None, FeatureSet.open(e.name, {PIXELS: path}, subset.names))


def _embed(m: Compared, params: EmbedParams, score: dict[str, Any]) -> Compared:
    maps = {la: map_layer(la, m.features.array(la), params=params, owner=m.entry.name,
                          quality_sample=len(score["labels"]), phase=phase, **score)  # (never placed)
            for la in m.features.layers}
    return replace(m, maps=maps)


def _aligned(m: Compared, reference: np.ndarray, out: Path) -> Compared:
    """Every map of ``m`` Procrustes-aligned onto ``reference``, saved as
    ``embeddings/<model>/<layer>.npy``."""
    aligned, residuals = align_maps({la: lm.coords for la, lm in m.maps.items()}, reference)
    for layer, xy in aligned.items():
        save_npy(out / "embeddings" / m.entry.folder / f"{layer_file_name(layer)}.npy", xy)
    return replace(m, maps={la: replace(lm, coords=aligned[la]) for la, lm in m.maps.items()}, residuals=residuals)


def _panels(run: TaskRun, models: list[Compared], colour: Any, subset: Subset, space: str) -> list[Path]:
    """The panel layer of every model side by side, in the first one's frame."""
    titles = [f"{m.entry.name}\n{m.panel_layer}" + (" · RANDOM WEIGHTS" if m.provenance is not None and
                                                   m.provenance.random and "RANDOM" not in m.entry.name else "")
              for m in models]
    fig = plot_aligned_panels(
        [(title, m.maps[m.panel_layer].coords) for title, m in zip(titles, models)], colour.values, colour.classes,
        {title: quality_for(m.maps[m.panel_layer].quality, colour) for title, m in zip(titles, models)},
        [m.provenance is not None and m.provenance.random for m in models], ncols=min(len(models), 4),
        title=f"{len(models)} models on the same {subset.n} images · aligned (orthogonal Procrustes) to "
              f"{models[0].entry.name}",
        footer=footer_text(models[0].maps[models[0].panel_layer].method, colour,
                           "same-source neighbours excluded (cue-conflict)" if score_excluded(models) else None)
        + " · shared initialisation",
        color_label=colour.name)
    return run.figure(fig, "compare_panels", "compare/panels")


def score_excluded(models: list[Compared]) -> bool:
    """Whether the kNN numbers left same-source cue-conflict neighbours out."""
    return any(lm.quality.get("knn_exclusion") for m in models for lm in m.maps.values())


def _curves(run: TaskRun, models: list[Compared], space: str, labeling: str) -> list[Path]:
    """Quality by relative depth, one line per model: ``layer_curves.csv`` and its figure."""
    rows = [[m.entry.name, la, round(j / max(len(m.layers) - 1, 1), 4), *(m.maps[la].quality.get(k) for k in CURVE_KEYS)]
            for m in models for j, la in enumerate(m.layers) if la in m.maps]
    files = [write_csv(run.dir / "layer_curves.csv", ["model", "layer", "relative_depth", *CURVE_KEYS], rows)]
    curves = {m.entry.name: [(la, m.maps[la].quality) for la in m.layers if la in m.maps] for m in models}
    fig = plot_layer_curves(curves, title=f"quality by depth · space: {space} · labels: {labeling}")
    return files + run.figure(fig, "layer_curves", "compare/layer_curves")


def _cka(run: TaskRun, t: DictConfig, models: list[Compared], files: list[Path]) -> tuple[dict[str, Any], float]:
    """Linear CKA between every layer of every pair of models: ``cka_<a>__<b>.csv`` + heatmap."""
    start, results = time.perf_counter(), {}
    for a, b in combinations(models, 2):
        la, lb = a.features.layers, b.features.layers
        with phase(f"linear CKA {a.entry.name} ({len(la)} layers) vs {b.entry.name} ({len(lb)} layers)"):
            m = cka_matrix([a.features.array(x) for x in la], [b.features.array(x) for x in lb],
                           method=str(_value(t.cka_method)), batch_size=int(t.cka_batch_size), seed=int(t.seed))
        key = f"{a.entry.folder}__{b.entry.folder}"
        files.append(write_csv(run.dir / f"cka_{key}.csv", ["layer", *lb],
                               [[x, *(f"{v:.6f}" for v in m[r])] for r, x in enumerate(la)]))
        files += run.figure(plot_cka_heatmap(m, la, lb, a.entry.name, b.entry.name), f"cka_{key}", f"compare/cka/{key}")
        results[key] = {"rows_model": a.entry.name, "cols_model": b.entry.name, "rows": la, "cols": lb,
                        "matrix": m.tolist()}
    return results, time.perf_counter() - start
