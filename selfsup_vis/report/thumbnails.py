"""Thumbnails a task saves into its run directory (``thumbnails.npz``) so that the report and
the Embedding Atlas export can be built, and rebuilt later, from the run directory alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup_vis.utils.io import write_with

FILE = "thumbnails.npz"


def make_thumbnails(load_image: Callable[[int], Image.Image], indices: Sequence[int],
                    size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 thumbnails of ``load_image(i)`` for every dataset index."""
    out = np.zeros((len(indices), size, size, 3), dtype=np.uint8)
    for j, i in enumerate(indices):
        img = load_image(int(i)).convert("RGB")
        img.thumbnail((size, size), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        out[j] = np.asarray(canvas)
    return out


def sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted rows (positions in the embedding CSVs) that get a thumbnail: all, or a seeded
    sample of ``max_rows``."""
    if max_rows <= 0:
        return np.zeros(0, dtype=np.int64)
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def save_thumbnails(run_dir: Path, rows: np.ndarray, images: np.ndarray) -> Path:
    """``thumbnails.npz``: ``rows`` (positions in embedding_*.csv) and ``images``."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, rows=np.asarray(rows, dtype=np.int64), images=images)

    return write_with(Path(run_dir) / FILE, write)


def load_thumbnails(run_dir: Path) -> dict[int, np.ndarray]:
    """``{row: image}`` from the run directory's thumbnails.npz (empty when there is none)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {int(r): img for r, img in zip(z["rows"], z["images"])}
