"""task=reconstruct: what a masked-image model (MAE, SimMIM, MaskFeat, any MaskedImageModule) fills in.

config -> images (files, folders, or samples of the dataset) -> model (+ checkpoint) -> masks
(seeded per image, a given .npy, or a mask ratio override) -> ``model.reconstruct`` with that
exact mask -> per image the four panels (original, masked, reconstruction, reconstruction +
visible; MaskFeat adds its HOG row), a grid of all, the numbers in ``reconstructions.npz`` and
each image's masked-patch error in ``summary.json``. MMSelfSup's version crashed on
non-norm-pix MAE, ignored the config's mean/std and drew one image per run.

The compute (``selfsup_vis.reconstruction``) is shared with the ``ReconstructionDump`` callback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from selfsup_vis.data.image_files import expand_images, load_image_files, slug
from selfsup_vis.data.transforms import pipeline_for_model
from selfsup_vis.models import build_model
from selfsup_vis.reconstruction.compute import (
    DisplayOptions,
    Reconstruction,
    reconstruct_batch,
    save_arrays,
)
from selfsup_vis.reconstruction.masks import (
    check_reconstructs,
    load_mask_file,
    make_masks,
    masked_image_model,
)
from selfsup_vis.reconstruction.plots import reconstruction_figure, reconstruction_grid
from selfsup_vis.tasks.common import TaskRun, phase

log = logging.getLogger(__name__)


def dataset_images(cfg: DictConfig, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` samples spread over the dataset's eval split (the synthetic default needs no files)."""
    dm = hydra.utils.instantiate(cfg.dataset)
    pipeline = pipeline_for_model(cfg.model, "eval", crop_pct=dm.eval_crop_pct)
    split = cfg.task.split or dm.eval_split
    ds = dm.dataset(split, pipeline)
    if len(ds) == 0:
        raise ValueError(f"reconstruct: dataset {dm.name} split {split!r} is empty")
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    samples = [ds[int(i)] for i in idx]
    samples = [s for s in samples if s is not None]
    log.info("no task.images: using %d images of %s/%s", len(samples), dm.name, split)
    return torch.stack([s["image"] for s in samples]), [f"{s['index']}_{s['name']}" for s in samples]


def _device(t: DictConfig, cfg: DictConfig) -> torch.device:
    if t.device != "auto":
        return torch.device(t.device)
    accel = str(cfg.trainer.get("accelerator", "cpu"))
    return torch.device("cuda" if torch.cuda.is_available() and accel != "cpu" else "cpu")


def display_options(t: Any) -> DisplayOptions:
    """``task.display*`` / the callback's same keys (refused before any work when bad)."""
    return DisplayOptions(str(t.display), int(t.display_neighbours), tuple(float(v) for v in t.mask_fill),
                          bool(t.mask_outline))


def _summary_numbers(recs: list[Reconstruction]) -> dict[str, Any]:
    """Means over images: target-space error, and per display mode PSNR and correlations."""
    out: dict[str, Any] = {"mean_masked_error": float(np.mean([r.error for r in recs]))}
    if recs[0].psnr_db is not None:
        out["mean_psnr_db"] = float(np.mean([r.psnr_db for r in recs]))
        out["by_display"] = {m: {k: float(np.mean([r.by_display[m][k] for r in recs]))
                                 for k in recs[0].by_display[m]} for m in recs[0].by_display}
    return out


def _images(cfg: DictConfig, t: DictConfig) -> tuple[torch.Tensor, list[str], bool]:
    if t.images is None or (isinstance(t.images, ListConfig | list) and len(t.images) == 0):
        return (*dataset_images(cfg, t.max_images), False)
    return (*load_image_files(expand_images(t.images, t.max_images), cfg.model, t.resize), True)


# ----------------------------------------------------------------------------- task
def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    check_reconstructs(cfg.model)
    opts = display_options(t)
    with phase("images"):
        images, names, from_files = _images(cfg, t)
    with phase("model"):
        model = masked_image_model(build_model(cfg.model).eval().to(_device(t, cfg)))
        algo = model.schema.family
    prov = run.model_provenance(
        model, cfg.model, seed=int(t.seed), dataset="task.images" if from_files else str(cfg.dataset.name),
        split=None if from_files else str(t.split or cfg.dataset.eval_split), n=int(images.shape[0]),
        sources=list(names) if from_files else [])
    n, g = images.shape[0], model.grid
    if t.mask:
        masks, mask_source = load_mask_file(t.mask, n, g), str(t.mask)
    else:
        masks = make_masks(model, n, t.seed, t.mask_ratio)
        mask_source = f"seed {t.seed}" + (f", mask_ratio {t.mask_ratio}" if t.mask_ratio is not None else "")
    recs: list[Reconstruction] = []
    with phase(f"reconstruct {n} images"):
        for s in range(0, n, t.batch_size):
            try:
                recs += reconstruct_batch(model, images[s : s + t.batch_size], masks[s : s + t.batch_size],
                                          names[s : s + t.batch_size], opts)
            except ValueError as err:
                if not t.mask:
                    raise
                raise ValueError(f"task.mask={t.mask}: {err}") from err
    rule = recs[0].display["rule"]
    records = []
    for i, r in enumerate(recs):
        fig = reconstruction_figure(r.panels, f"{cfg.model.name} · {r.name} · masked {r.mask_ratio:.0%}", rule)
        run.provenance = prov.replace(n=1, sources=[r.name])
        files = run.figure(fig, f"reconstruct/{i:03d}_{slug(r.name)}", f"reconstruct/{i:03d}_{slug(r.name)}")
        records.append({"index": i, **r.to_dict(), "files": [str(f) for f in files]})
    run.provenance = prov
    grid = reconstruction_grid([r.panels for r in recs], f"{cfg.model.name} ({algo}) · masks: {mask_source}", rule)
    grid_files = run.figure(grid, "reconstruction_grid", "reconstruct/grid")
    npz = save_arrays(run.dir / "reconstructions.npz", recs)
    numbers = _summary_numbers(recs)
    run.scalars({"reconstruct/masked_error": numbers["mean_masked_error"],
                 "reconstruct/psnr_db": numbers.get("mean_psnr_db"),
                 "reconstruct/mask_ratio": float(np.mean([r.mask_ratio for r in recs]))})
    log.info("mean masked-patch error (%s, target space): %.5f over %d images; %s", recs[0].error_kind,
             numbers["mean_masked_error"], n, rule)
    return run.write_summary({
        "task": "reconstruct", "model": cfg.model.name, "algorithm": algo,
        "checkpoint": cfg.model.get("checkpoint"), "norm_pix": bool(getattr(model, "norm_pix", False)),
        "normalization": {"mean": list(model.mean), "std": list(model.std)},
        "mask": {"source": mask_source, "grid": [g, g], "seed": t.seed, "mask_ratio": t.mask_ratio,
                 "fill": list(opts.mask_fill), "outline": opts.outline},
        "display": recs[0].display, "error_kind": recs[0].error_kind, **numbers, "images": records,
        "grid": [str(f) for f in grid_files], "arrays": str(npz),
        "config": OmegaConf.to_container(t, resolve=True), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
