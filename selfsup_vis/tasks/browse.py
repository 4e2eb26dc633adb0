"""task=browse: render what the data pipeline feeds the model (MMSelfSup's browse_dataset).

Every view of a multi-view pipeline side by side with its size, the mask of a masked
pipeline overlaid, de-normalised with the pipeline's own mean/std; ``skip_type`` really
removes transforms; one file per sample named ``<index>_<name>.png`` (no overwrites).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from selfsup_vis.checkpoints.provenance import Provenance
from selfsup_vis.data.datamodule import ImageDataModule
from selfsup_vis.models import model_pipeline
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import add_provenance
from selfsup_vis.tasks.common import TaskRun
from selfsup_vis.views.plots import grid_figure, sample_figure

log = logging.getLogger(__name__)


def _slug(name: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")[:80] or "sample"


def _show(figures: list, interval: float, out_dir: Path) -> None:
    """Show figures in a window one after another (needs a display and a GUI backend)."""
    import matplotlib.pyplot as plt

    try:
        plt.switch_backend("TkAgg")
    except Exception as err:  # no display / no Tk: files are written anyway
        log.warning("task.show=true but no window can be opened (%s); figures are in %s", err, out_dir)
        return
    for fig in figures:
        manager = plt.figure().canvas.manager
        manager.canvas.figure = fig
        fig.set_canvas(manager.canvas)
        plt.show(block=False)
        plt.pause(interval)
        plt.close("all")


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    dm: ImageDataModule = hydra.utils.instantiate(cfg.dataset)
    phase = t.phase.value if hasattr(t.phase, "value") else str(t.phase)
    pipeline_name = t.pipeline.value if hasattr(t.pipeline, "value") else t.pipeline
    if phase == "val":
        pipeline_name = pipeline_name or "eval"
    pipeline = model_pipeline(cfg.model, pipeline_name, list(t.skip_type), crop_pct=dm.eval_crop_pct)
    split = t.split or (dm.train_split if phase == "train" else dm.eval_split)
    dataset = dm.dataset(split, pipeline)
    log.info("%s\non %s split %r (%d images)", pipeline.describe(), dm.name, split, len(dataset))
    if len(dataset) == 0:
        raise ValueError(f"browse: dataset {dm.name} split {split!r} is empty")

    rng = np.random.default_rng(t.seed)
    n = min(t.n_samples, len(dataset))
    indices = sorted(rng.choice(len(dataset), size=n, replace=False).tolist())
    out_dir = run.dir / "browse"
    prov = run.set_provenance(Provenance(
        task="browse", model=f"{cfg.model.name} pipeline {pipeline.name}",
        weights="none (the data pipeline only; no model weights are used)", seed=int(t.seed),
        dataset=dm.name, split=split, n=n))
    loggers = run.loggers
    records, samples, figures = [], [], []
    for idx in indices:
        torch.manual_seed(t.seed * 1_000_003 + idx)  # same views for the same seed and index
        sample = dataset[idx]
        if sample is None:
            continue
        title = f"#{idx} {sample['name']} ({dataset.classes[sample['label']]})"
        fig = sample_figure(sample, pipeline, title)
        add_provenance(fig, prov.replace(n=1, sources=[str(sample["name"])]))
        files = save_figure(fig, out_dir / f"{idx:06d}_{_slug(sample['name'])}", t.formats)
        figures.append(fig)
        samples.append((f"#{idx} {dataset.classes[sample['label']]}", sample))
        views = sample["views"] if "views" in sample else [sample["image"]]
        records.append(
            {
                "index": idx,
                "name": sample["name"],
                "label": int(sample["label"]),
                "class": dataset.classes[sample["label"]],
                "view_shapes": [list(v.shape) for v in views],
                "mask_shape": list(sample["mask"].shape) if "mask" in sample else None,
                "mask_ratio": float(sample["mask"].float().mean()) if "mask" in sample else None,
                "files": [str(f) for f in files],
            }
        )
    grid = grid_figure(samples, pipeline, f"{dm.name}/{split} · pipeline {pipeline.name}")
    add_provenance(grid, prov)
    grid_files = save_figure(grid, run.dir / "browse_grid", t.formats)
    log_figure(loggers, f"browse/{pipeline.name}", grid, step=0)
    ratios = [r["mask_ratio"] for r in records if r["mask_ratio"] is not None]
    scalars = {"browse/n_samples": len(records), "browse/num_views": len(pipeline.views)}
    if ratios:
        scalars["browse/mask_ratio"] = float(np.mean(ratios))
    log_scalars(loggers, scalars, step=0)
    if t.show:
        _show(figures + [grid], t.show_interval, run.dir)
    summary = {
        "task": "browse",
        "dataset": dm.name,
        "split": split,
        "pipeline": pipeline.describe(),
        "skipped": pipeline.skipped,
        "normalization": {"mean": list(pipeline.mean), "std": list(pipeline.std), "applied": pipeline.normalized},
        "samples": records,
        "grid": [str(f) for f in grid_files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    run.write_summary(summary)
    return summary
