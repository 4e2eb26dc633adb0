"""What the tsne task leaves for its report and for other tools: sampled thumbnails
(``thumbnails.npz``, read by report.html's hover) and, with ``task.export=[atlas]``, the
Embedding Atlas parquet (every point with a thumbnail and its feature-space neighbours)."""

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
