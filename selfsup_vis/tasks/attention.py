"""task=attention: where a model looks, and whether that is on the object.

config -> method / layer / target checked against the model (unknown names list the valid
ones) -> images (files, folders, or samples of the dataset) with their object masks (the
synthetic set knows them; ``task.masks_root`` for files and image folders) -> maps in batches
(``selfsup_vis.attention.compute_maps``: CLS attention per head, rollout, Grad-CAM family via
``grad-cam``, class-agnostic maps) -> per image the input and each map overlaid, a grid of all,
``maps_<method>_<layer>.npy`` + ``images.txt`` to redraw them, and in ``summary.json`` per
method and layer the pointing game and the energy inside the mask, next to a random map's and
a centred blob's (the synthetic shapes sit near the centre: a centre prior scores well too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from omegaconf import DictConfig, ListConfig, OmegaConf

from selfsup_vis.attention.cam import CLASS_AGNOSTIC
from selfsup_vis.attention.compute import (
    ATTENTION_METHODS,
    MapSpec,
    check_spec,
    compute_maps,
    is_classifier,
    resolve_targets,
)
from selfsup_vis.attention.masks import find_mask, load_mask, to_input_geometry
from selfsup_vis.attention.metric import PointingGame
from selfsup_vis.attention.plots import grid_figure, image_figure
from selfsup_vis.attention.prefix import head_overlay_figure, mass_threshold
from selfsup_vis.checkpoints.provenance import model_provenance
from selfsup_vis.data.cue_conflict_categories import CATEGORIES, IMAGENET_INDICES, texture_of
from selfsup_vis.data.image_files import expand_images, load_image_files, slug
from selfsup_vis.data.transforms import denormalize, pipeline_for_model
from selfsup_vis.models import build_model
from selfsup_vis.report.summaries import AttentionSummary
from selfsup_vis.tasks.common import TaskRun, phase
from selfsup_vis.utils.io import save_npy, write_text

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Model-normalised images with their names, object masks and labels (when known)."""

    images: torch.Tensor
    names: list[str]
    masks: list[np.ndarray] | None = None
    labels: list[int] | None = None
    textures: list[int] | None = None
    classes: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)


def _given(images: Any) -> bool:
    return images is not None and not (isinstance(images, ListConfig | list) and len(images) == 0)


def _file_inputs(cfg: DictConfig) -> Inputs:
    t = cfg.task
    files = expand_images(t.images, t.max_images)
    images, names = load_image_files(files, cfg.model, t.resize)
    masks = None
    if t.masks_root:
        crop = 1.0 if t.resize == "crop" else None
        masks = [load_mask(find_mask(t.masks_root, f.name), int(cfg.model.img_size), crop) for f in files]
    return Inputs(images, names, masks, source={"images": [str(f) for f in files]})


def _dataset_inputs(cfg: DictConfig) -> Inputs:
    t = cfg.task
    dm = hydra.utils.instantiate(cfg.dataset)
    crop = dm.eval_crop_pct
    pipeline = pipeline_for_model(cfg.model, "eval", crop_pct=crop)
    split = t.split or dm.eval_split
    ds = dm.dataset(split, pipeline)
    if len(ds) == 0:
        raise ValueError(f"attention: dataset {dm.name} split {split!r} is empty")
    idx = np.unique(np.linspace(0, len(ds) - 1, min(t.max_images, len(ds))).round().astype(int)).tolist()
    samples = [(i, ds[i]) for i in idx]
    samples = [(i, s) for i, s in samples if s is not None]
    size = int(cfg.model.img_size)
    masks = None
    if hasattr(ds, "object_mask") and ds.object_mask(samples[0][0]) is not None:
        masks = [to_input_geometry(ds.object_mask(i), size, crop) for i, _ in samples]
    elif t.masks_root:
        masks = [load_mask(find_mask(t.masks_root, s["name"]), size, crop) for _, s in samples]
    textures = None
    if hasattr(ds, "texture_label"):
        textures = [int(ds.texture_label(i)) for i, _ in samples]
    elif dm.name == "cue_conflict":
        textures = [CATEGORIES.index(texture_of(s["name"])) for _, s in samples]
    log.info("no task.images: using %d images of %s/%s%s", len(samples), dm.name, split,
             " with object masks" if masks is not None else "")
    return Inputs(torch.stack([s["image"] for _, s in samples]), [f"{i}_{s['name']}" for i, s in samples],
                  masks, [int(s["label"]) for _, s in samples], textures, list(ds.classes),
                  {"dataset": dm.name, "split": split, "indices": idx})


def _device(t: DictConfig, cfg: DictConfig) -> torch.device:
    if t.device != "auto":
        return torch.device(t.device)
    accel = str(cfg.trainer.get("accelerator", "cpu"))
    return torch.device("cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu")


def _autocast(cfg: DictConfig, device: torch.device) -> Any:
    """bf16 autocast where the trainer asks for it on a GPU (maps are computed in float32 after)."""
    if device.type == "cuda" and str(cfg.trainer.get("precision", "32")).startswith("bf16"):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return None


def _check_task(t: DictConfig) -> None:
    if not 0.0 <= float(t.alpha) <= 1.0:
        raise ValueError(f"task.alpha={t.alpha}: must be in [0, 1]")
    if not 0.0 <= float(t.discard_ratio) < 1.0:
        raise ValueError(f"task.discard_ratio={t.discard_ratio}: must be in [0, 1)")
    if t.batch_size < 1 or t.max_images < 1:
        raise ValueError("task.batch_size and task.max_images must be >= 1")
    if t.head_threshold is not None and not 0.0 < float(t.head_threshold) <= 1.0:
        raise ValueError(f"task.head_threshold={t.head_threshold}: must be in (0, 1] (DINO: 0.6)")
    if t.head_threshold is not None and str(t.method) != "cls_attention":
        raise ValueError(f"task.head_threshold={t.head_threshold}: only with task.method=cls_attention "
                         f"(per-head CLS attention), not {t.method}")
    if t.colormap not in colormaps:
        raise ValueError(f"task.colormap={t.colormap!r} is not a matplotlib colormap (e.g. inferno, viridis, magma)")


def _baselines(masks: torch.Tensor, seed: int, tolerance: int) -> dict[str, dict[str, float]]:
    """What maps that know nothing score: seeded uniform noise, and a centred Gaussian blob."""
    n, H, W = masks.shape
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, H, W, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    centre = torch.exp(-(xx**2 + yy**2) / (2 * 0.3**2)).expand(n, H, W)
    out = {}
    for name, maps in (("random", noise), ("centre", centre)):
        metric = PointingGame(tolerance)
        metric.update(maps, masks)
        out[name] = {k: float(v) for k, v in metric.compute().items() if k != "num_images"}
    return out


@dataclass(frozen=True)
class Targets:
    """What a Grad-CAM method explains: per image the class (prediction, ``task.target_category``,
    the label, or shape/texture of cue-conflict images); None for class-agnostic maps."""

    classifier: bool
    class_names: list[str] | None
    category_indices: Any
    description: str


def _targets(t: DictConfig, model: Any, inp: Inputs, method: str, device: torch.device) -> Targets:
    classifier = is_classifier(model) and method not in ATTENTION_METHODS | CLASS_AGNOSTIC
    n_out = int(model(inp.images[:1].to(device)).shape[-1]) if classifier else None
    class_names = inp.classes if inp.classes and n_out == len(inp.classes) else None
    category_indices = (IMAGENET_INDICES if n_out == 1000 and inp.source.get("dataset") == "cue_conflict"
                        else None)
    if category_indices is not None:
        class_names = list(CATEGORIES)
    desc = ("class-agnostic" if not classifier else
            "prediction" if t.target_category is None else str(t.target_category))
    return Targets(classifier, class_names, category_indices, desc)


def _compute(t: DictConfig, model: Any, inp: Inputs, spec: MapSpec, tg: Targets, device: torch.device,
             autocast: Any) -> tuple[Any, np.ndarray, list[list[str]], np.ndarray | None]:
    """The maps of every image in batches of ``task.batch_size``: (first chunk's result, maps
    (N, K, H, W), panel labels per image, token-grid maps or None)."""
    chunks = []
    with phase(f"{spec.method} of {len(inp.images)} images (batches of {t.batch_size})"):
        for s in range(0, len(inp.images), t.batch_size):
            x = inp.images[s : s + t.batch_size].to(device)
            targets = None
            if tg.classifier:
                sl = slice(s, s + t.batch_size)
                targets = resolve_targets(
                    t.target_category, model, x, tg.class_names,
                    inp.labels[sl] if inp.labels is not None else None,
                    inp.textures[sl] if inp.textures is not None else None, tg.category_indices)
            chunks.append(compute_maps(model, x, spec, targets, autocast))
    grid = np.concatenate([c.grid_maps for c in chunks]) if chunks[0].grid_maps is not None else None
    return chunks[0], np.concatenate([c.maps for c in chunks]), [lab for c in chunks for lab in c.labels], grid


def _score(t: DictConfig, keys: list[str], maps: np.ndarray, masks: torch.Tensor) -> dict[str, dict[str, float]]:
    """The pointing game and the energy inside the object mask of every panel."""
    scores = {}
    for j, panel in enumerate(keys):
        metric = PointingGame(t.tolerance)
        metric.update(torch.from_numpy(maps[:, j]), masks)
        scores[panel] = {k: float(v) for k, v in metric.compute().items()}
    return scores


def _head_overlays(t: DictConfig, run: TaskRun, display: np.ndarray, grid_maps: np.ndarray,
                   layer: str, names: list[str], base: str, title: str) -> dict[str, Any]:
    """``task.head_threshold``: the DINO figure (facebookresearch/dino visualize_attention.py)
    per image: each head's CLS attention on the patch grid thresholded to keep that fraction of
    its mass, upsampled nearest to the image, one colour per head. The masks (N, heads, h, w) are
    saved next to the maps; the summary gets the mean area each head keeps."""
    keep = mass_threshold(torch.from_numpy(grid_maps[:, :-1]), float(t.head_threshold))  # no "mean"
    up = F.interpolate(keep.float(), size=display.shape[1:3], mode="nearest").bool().numpy()
    save_npy(run.dir / f"head_masks_{base}.npy", keep.numpy())
    files = []
    for i in range(min(len(names), t.max_figures)):
        fig = head_overlay_figure(display[i], up[i], f"{title}\n{names[i]}: each head's top "
                                                     f"{float(t.head_threshold):.0%} of attention mass")
        name = f"attention/{base}/heads_{i:03d}_{slug(names[i])}"
        files += run.figure(fig, name, name, provenance_layer=layer)
    return {"keep_mass": float(t.head_threshold), "masks": str(run.dir / f"head_masks_{base}.npy"),
            "figures": [str(f) for f in files],
            "area_fraction": {f"head{k}": float(keep[:, k].float().mean()) for k in range(keep.shape[1])}}


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    _check_task(t)
    method = str(t.method)
    with phase("model"):
        device = _device(t, cfg)
        model = build_model(cfg.model).eval().to(device)
    layers = [None] if method in ATTENTION_METHODS or not t.target_layers else [str(x) for x in t.target_layers]
    specs = [MapSpec(method, layer, t.block, str(t.head_fusion), float(t.discard_ratio), bool(t.aug_smooth),
                     bool(t.eigen_smooth)) for layer in layers]
    for spec in specs:  # unknown method / layer / a CAM on a headless backbone: refused before any work
        check_spec(model, spec)
    if t.target_category is not None and method in ATTENTION_METHODS | CLASS_AGNOSTIC:
        raise ValueError(f"task.target_category={t.target_category}: method {method} is class-agnostic; "
                         "use a Grad-CAM method (gradcam, gradcampp, ...) for class targets")
    with phase("images"):
        inp = _file_inputs(cfg) if _given(t.images) else _dataset_inputs(cfg)
    n = inp.images.shape[0]
    tg = _targets(t, model, inp, method, device)
    run.set_provenance(model_provenance(
        "attention", OmegaConf.to_container(cfg.model, resolve=True), model, init_seed=cfg.get("seed"),
        seed=t.seed, dataset=inp.source.get("dataset"), split=inp.source.get("split"), n=n))

    out = run.dir
    display = denormalize(inp.images, model.mean, model.std).permute(0, 2, 3, 1).numpy()
    masks = torch.from_numpy(np.stack(inp.masks)) if inp.masks is not None else None
    results: dict[str, Any] = {}
    for spec in specs:
        res, maps, labels, grid_maps = _compute(t, model, inp, spec, tg, device, _autocast(cfg, device))
        key = f"{method}@{res.layer.split(' ')[0]}"
        title = f"{cfg.model.name} · {method} · layer {res.layer} · target {tg.description}"
        base = f"{slug(method)}_{slug(res.layer.split(' ')[0])}"
        save_npy(out / f"maps_{base}.npy", maps)
        if grid_maps is not None:
            save_npy(out / f"maps_{base}_grid.npy", grid_maps)
        files = []
        for i in range(min(n, t.max_figures)):
            fig = image_figure(display[i], maps[i], labels[i], f"{title}\n{inp.names[i]}", None, t.alpha,
                               t.colormap, inp.masks[i] if inp.masks is not None else None)
            name = f"{i:03d}_{slug(inp.names[i])}"
            files += run.figure(fig, f"attention/{base}/{name}", f"attention/{base}/{name}", provenance_layer=res.layer)
        shown = list(range(len(res.keys))) if len(res.keys) <= 3 else [res.scored % len(res.keys)]
        grid = grid_figure(display, [maps[i][shown] for i in range(n)], [[labels[i][j] for j in shown] for i in range(n)],
                           inp.names, title, None, t.alpha, t.colormap, inp.masks)
        grid_files = run.figure(grid, f"attention_grid_{base}", f"attention/{base}/grid", provenance_layer=res.layer)
        entry: dict[str, Any] = {"method": method, "layer": res.layer, "panels": res.keys,
                                 "scored_panel": res.keys[res.scored], "target": tg.description,
                                 "maps": str(out / f"maps_{base}.npy"), "grid": [str(f) for f in grid_files],
                                 "figures": [str(f) for f in files],
                                 "labels": {inp.names[i]: labels[i] for i in range(n)}}
        if t.head_threshold is not None:  # cls_attention only (checked): the DINO per-head figure
            entry["head_threshold"] = _head_overlays(t, run, display, grid_maps, res.layer, inp.names, base, title)
        if masks is not None:
            entry["pointing_game"] = _score(t, res.keys, maps, masks)
            entry["score"] = score = entry["pointing_game"][res.keys[res.scored]]
            run.scalars({f"attention/{key}/{k}": v for k, v in score.items()})
            log.info("%s: pointing game %.3f, energy inside the mask %.3f (mask area %.3f) over %d images",
                     key, score["pointing_accuracy"], score["energy_inside"], score["area_fraction"], n)
        results[key] = entry
    write_text(out / "images.txt", "\n".join(inp.names) + "\n")
    summary = AttentionSummary(
        model=cfg.model.name, checkpoint=cfg.model.get("checkpoint"), method=method, images=inp.names,
        images_file=str(out / "images.txt"), source=inp.source, results=results,
        pointing_game=({"tolerance": t.tolerance, "baselines": _baselines(masks, t.seed, t.tolerance)}
                       if masks is not None else
                       "omitted: no object masks (synthetic data has them; else task.masks_root)"),
        config=OmegaConf.to_container(t, resolve=True))
    return run.write_summary(summary)
