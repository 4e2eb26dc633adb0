"""What the tsne task leaves for its report and for other tools: sampled thumbnails
(``thumbnails.npz``, read by report.html's hover) and, with ``task.export=[atlas]``, the
Embedding Atlas parquet (every point with a thumbnail and its feature-space neighbours); and a
seeded sample in TensorBoard's embedding projector (features, class and path metadata, a
thumbnail sprite) and as W&B tables (path, class, x, y per layer). Only the loggers are needed
for the latter (no run object); nothing is done without a TensorBoard or W&B logger."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from selfsup_vis.report.atlas import FILE as ATLAS_FILE
from selfsup_vis.report.atlas import export_atlas
from selfsup_vis.report.thumbnails import make_thumbnails, sample_rows, save_thumbnails

EXPORTS = ("atlas",)


def write_embedding_exports(out: Path, load_image: Callable[[int], Image.Image], indices: np.ndarray,
                            labels: np.ndarray, names: Sequence[str], classes: Sequence[str],
                            coords: Mapping[str, np.ndarray], features: Mapping[str, np.ndarray],
                            export: Sequence[str] = (), n_thumbnails: int = 1000, size: int = 48,
                            k: int = 15, seed: int = 0) -> dict[str, Any]:
    """Write thumbnails.npz (a seeded sample of ``n_thumbnails`` rows) and the requested
    exports; returns ``{name: path}`` for the summary."""
    unknown = [e for e in export if e not in EXPORTS]
    if unknown:
        raise ValueError(f"task.export: unknown {unknown}; choose from {list(EXPORTS)}")
    n = len(indices)
    atlas = "atlas" in export
    rows = np.arange(n) if atlas else sample_rows(n, n_thumbnails, seed)
    images = make_thumbnails(load_image, [int(indices[r]) for r in rows], size)
    report_rows = sample_rows(n, n_thumbnails, seed)
    pick = np.searchsorted(rows, report_rows)
    files: dict[str, Any] = {"thumbnails": str(save_thumbnails(out, report_rows, images[pick]))}
    if atlas:
        files["atlas"] = str(export_atlas(out / ATLAS_FILE, coords, labels, classes, names,
                                          dict(zip(rows.tolist(), images)), features, k=k))
    return files


def projector_rows(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted rows of the seeded sample (all rows when ``n <= max_samples``)."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, max_samples), replace=False))


def export_projector(loggers: Sequence[Any], rows: np.ndarray, features: Mapping[str, np.ndarray],
                     coords: Mapping[str, np.ndarray], labels: np.ndarray, names: Sequence[str],
                     classes: Sequence[str], *, sprite_size: int,
                     load_image: Callable[[int], Any] | None = None,
                     image_indices: np.ndarray | None = None) -> None:
    """``rows`` of every layer's ``features`` to the TensorBoard projector (tag ``tsne/<layer>``,
    with a sprite of the images ``image_indices[rows]`` when ``load_image`` is given) and of
    its ``coords`` as a W&B table ``tsne/<layer>/table``."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    tb = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    wb = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not tb and not wb:
        return
    lab = np.asarray(labels)[rows]
    nm = [names[int(i)] for i in rows]
    if tb:
        import torch

        thumbs = None if load_image is None or image_indices is None else torch.from_numpy(
            make_thumbnails(load_image, [int(i) for i in np.asarray(image_indices)[rows]], sprite_size)
        ).permute(0, 3, 1, 2).float() / 255.0  # letterboxed: the sprite keeps each image's aspect
        meta = [[classes[int(lab[j])], nm[j]] for j in range(len(lab))]
        for layer, feats in features.items():
            for lg in tb:
                lg.experiment.add_embedding(
                    np.asarray(feats[rows] if isinstance(feats, np.ndarray) else feats.take(rows)),
                    metadata=meta, metadata_header=["class", "path"], label_img=thumbs,
                    tag=f"tsne/{layer}", global_step=0)
    for lg in wb:
        import wandb

        for layer, xy in coords.items():
            table = wandb.Table(columns=["path", "class", "x", "y"],
                                data=[[nm[j], classes[int(lab[j])], float(x), float(y)]
                                      for j, (x, y) in enumerate(xy[rows])])
            lg.experiment.log({f"tsne/{layer}/table": table})
