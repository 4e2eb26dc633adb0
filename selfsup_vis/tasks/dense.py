"""task=dense: what each patch encodes.

config -> model (at ``task.img_size``) -> layers checked to have a grid, the image size to
hold a patch and a reused basis to match the feature size, all before extraction -> images
(files, folders or dataset samples, with object masks where known) -> patch grids streamed to
disk per layer (``selfsup_vis.dense``) -> per layer: PCA basis (joint or per image, or reused),
PCA-RGB + PC1 foreground, similarity from the query, mutual matches, token norms and outliers,
the foreground IoU on known masks -> one figure per layer, matches figures, a norms-by-layer
figure, ``dense_<layer>.npz`` + ``pca_basis[_<layer>].npz``, headline numbers in summary.json.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from selfsup_vis.checkpoints.provenance import model_provenance
from selfsup_vis.data.transforms import denormalize
from selfsup_vis.dense.compute import DenseSettings, analyse, extract
from selfsup_vis.dense.grids import expected_grids, grid_layers, layer_dims
from selfsup_vis.dense.inputs import load_inputs
from selfsup_vis.dense.norms import norm_stats
from selfsup_vis.dense.outputs import write_layer, write_norms
from selfsup_vis.dense.pca import BASIS_FILE, DenseBasis
from selfsup_vis.models import build_model
from selfsup_vis.tasks.common import TaskRun, phase
from selfsup_vis.utils.io import copy_file


def _settings(t: DictConfig) -> DenseSettings:
    if len(t.percentiles) != 2 or not 0 <= t.percentiles[0] < t.percentiles[1] <= 100:
        raise ValueError(f"task.percentiles={list(t.percentiles)}: two values 0 <= low < high <= 100")
    if t.basis_from and t.basis != "joint":
        raise ValueError("task.basis_from reuses one joint basis; it cannot go with task.basis=per_image")
    if any(not isinstance(q, ListConfig) or len(q) != 2 for q in t.queries):
        raise ValueError(f"task.queries={OmegaConf.to_container(t.queries)}: each query is [y, x] in input pixels")
    return DenseSettings(str(t.normalisation), str(t.basis), bool(t.foreground), t.threshold, str(t.foreground_sign),
                         tuple(t.percentiles), float(t.outlier_k), [[float(v) for v in q] for q in t.queries], t.top_k, t.max_pairs)


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t, s = cfg.task, _settings(cfg.task)
    model_cfg = cfg.model.copy()
    with open_dict(model_cfg):
        model_cfg.img_size = int(t.img_size or model_cfg.img_size)
    size = int(model_cfg.img_size)
    device = torch.device(t.device if t.device != "auto" else "cuda" if torch.cuda.is_available()
                          and str(cfg.trainer.get("accelerator", "cpu")) != "cpu" else "cpu")
    with phase("model"):
        model = build_model(model_cfg, img_size=size).eval().to(device)
    valid = grid_layers(model)
    layers = [str(x) for x in t.layers] or valid[-1:]
    grids = expected_grids(model, layers, (size, size))  # grid-less layer / image < one patch: refused here
    basis = None
    if t.basis_from:
        if len(layers) != 1:
            raise ValueError(f"task.basis_from: a saved basis colours one layer; task.layers={layers}")
        basis = DenseBasis.load(t.basis_from, layer_dims(model, layers).get(layers[0]))
    with phase("images"):
        inp = load_inputs(t, model_cfg, cfg.dataset)
    prov = run.set_provenance(model_provenance(
        "dense", OmegaConf.to_container(model_cfg, resolve=True), model, init_seed=cfg.get("seed"),
        dataset=inp.source.get("dataset"), split=inp.source.get("split"), n=len(inp.names)))
    with phase(f"patch grids of {len(inp.names)} images, layers {layers} (grids {grids})"):
        feats = extract(model, layers, inp.images, t.batch_size, device, t.final_norm, run.dir, norm_layers=valid)
    display = denormalize(inp.images, model.mean, model.std).permute(0, 2, 3, 1).numpy()
    masks = inp.masks.numpy() if inp.masks is not None else None
    results, headline = {}, {}
    for layer in layers:
        with phase(f"PCA, similarity, matches and norms of {layer}"):
            res = analyse(feats[layer], s, (size, size), basis, inp.masks,
                          {"model": cfg.model.name, "layer": layer, "checkpoint": cfg.model.get("checkpoint")})
        results[layer] = write_layer(run.dir, run.loggers, res, display, inp.names, masks, cfg.model.name,
                                     s.describe(), prov.replace(layer=layer), t.formats, t.max_rows)
        headline[f"outlier_fraction/{layer}"] = res.norm_stats.outlier_fraction
        if res.iou is not None:
            headline |= {f"foreground_iou/{layer}": res.iou["iou"], f"centre_blob_iou/{layer}": res.iou["centre_blob_iou"]}
    if "basis" in results[layers[0]]:
        copy_file(results[layers[0]]["basis"]["file"], run.dir / BASIS_FILE)  # what task.basis_from=<run dir> reads
    stats = {la: norm_stats(feats[la].norms, s.outlier_k, feats[la].cls, feats[la].registers)[1] for la in valid}
    norm_files = write_norms(run.dir, run.loggers, stats, cfg.model.name, prov, t.formats)
    if not t.save_features:
        for layer in layers:
            (run.dir / f"patches_{layer}.npy").unlink(missing_ok=True)
    summary = {"task": "dense", "model": cfg.model.name, "checkpoint": cfg.model.get("checkpoint"),
               "img_size": size, "settings": s.describe(), "images": inp.names, "source": inp.source,
               "basis_from": t.basis_from, "layers": results, "headline": headline,
               "norms_by_layer": {la: st.as_dict() for la, st in stats.items()}, "norms_figure": norm_files,
               "iou": "omitted: no object masks (synthetic data has them; else task.masks_root)" if masks is None
               else "PC1 foreground upsampled bilinearly (>= 0.5) vs the object mask; centre blob: a centred "
                    "disc of the mask's area", "config": OmegaConf.to_container(t, resolve=True)}
    run.write_summary(summary)
    return summary
