"""Image thumbnails on an embedding map, laid out so that they do not pile up.

The map's bounding box is cut into square cells (``grid`` cells along the longer side); each
occupied cell shows one thumbnail, of the point nearest the cell's centre, snapped to the cell's
centre (at most half a cell from its point) and a little smaller than a cell, so thumbnails
never overlap. Dense regions thus show one image per cell instead of a heap, sparse regions
show every point. Thumbnails are ``imshow`` images with data extents, which
matplotlib writes natively to PNG, PDF and SVG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image


def grid_pick(coords: np.ndarray, grid: int = 20, max_n: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the points that get a thumbnail: at most one per cell (the nearest to the
    cell's centre), then at most ``max_n`` of those (seeded), sorted."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"grid_pick: coords must have shape (N, 2), got {c.shape}")
    if grid < 1:
        raise ValueError(f"grid_pick: grid must be >= 1, got {grid}")
    if len(c) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = c.min(axis=0)
    cell = max(float((c.max(axis=0) - lo).max()), 1e-12) / grid
    ij = np.minimum(np.floor((c - lo) / cell).astype(np.int64), grid - 1)
    centre = lo + (ij + 0.5) * cell
    dist = np.linalg.norm(c - centre, axis=1)
    cell_id = ij[:, 0] * grid + ij[:, 1]
    order = np.lexsort((np.arange(len(c)), dist, cell_id))  # by cell, then nearest, then index
    _, first = np.unique(cell_id[order], return_index=True)
    picked = np.sort(order[first])
    if max_n is not None and picked.size > max_n:
        picked = np.sort(np.random.default_rng(seed).choice(picked, size=max_n, replace=False))
    return picked


def thumbnail_array(image: Image.Image, size: int) -> np.ndarray:
    """An RGB uint8 thumbnail of a PIL image whose longer side is ``size``: the whole image at
    its own aspect ratio, neither stretched nor cropped (:func:`draw_thumbnails` sizes each
    thumbnail's extent to its shape)."""
    im = image.convert("RGB")
    w, h = im.size
    scale = size / max(w, h)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(im.resize(shape, Image.Resampling.LANCZOS), dtype=np.uint8)


def cell_size(coords: np.ndarray, grid: int) -> float:
    """Side of one layout cell in data units (the longer side of the bounding box / grid)."""
    c = np.asarray(coords, dtype=np.float64)
    return max(float((c.max(axis=0) - c.min(axis=0)).max()), 1e-12) / grid


def snapped_centres(coords: np.ndarray, picked: np.ndarray, grid: int) -> np.ndarray:
    """Centres (len(picked), 2) of the layout cells of the picked points."""
    c = np.asarray(coords, dtype=np.float64)
    lo, cell = c.min(axis=0), cell_size(c, grid)
    ij = np.minimum(np.floor((c[np.asarray(picked, dtype=np.int64)] - lo) / cell), grid - 1)
    return lo + (ij + 0.5) * cell


def draw_thumbnails(
    ax,
    coords: np.ndarray,
    picked: np.ndarray,
    images: Sequence[np.ndarray],
    grid: int,
    frame_colors: Sequence | None = None,
    fill: float = 0.92,
) -> None:
    """Draw ``images[j]`` at the centre of the cell of ``coords[picked[j]]``, its longer side
    ``fill`` of a cell, at its own aspect ratio (in data units, so an axis with equal scales
    shows it unstretched), with an optional coloured frame (the point's class colour), above the
    scatter."""
    if len(picked) != len(images):
        raise ValueError(f"draw_thumbnails: {len(picked)} points but {len(images)} images")
    c = np.asarray(coords, dtype=np.float64)
    half = 0.5 * fill * cell_size(c, grid)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    centres = snapped_centres(c, picked, grid)
    for j, ((x, y), img) in enumerate(zip(centres, images)):
        h, w = np.asarray(img).shape[:2]
        hw, hh = half * w / max(h, w), half * h / max(h, w)
        ax.imshow(img, extent=(x - hw, x + hw, y - hh, y + hh), zorder=3,
                  interpolation="antialiased", aspect="auto")
        if frame_colors is not None:
            ax.add_patch(Rectangle((x - hw, y - hh), 2 * hw, 2 * hh, fill=False,
                                   edgecolor=frame_colors[j], linewidth=0.8, zorder=4))
    # imshow resets the limits to its own extent: show all points and every whole thumbnail
    everything = np.concatenate([c, centres - half, centres + half]) if len(centres) else c
    ax.set_xlim(min(xlim[0], everything[:, 0].min()), max(xlim[1], everything[:, 0].max()))
    ax.set_ylim(min(ylim[0], everything[:, 1].min()), max(ylim[1], everything[:, 1].max()))


def load_thumbnails(coords: np.ndarray, load_image, indices: Sequence[int], grid: int, size: int,
                    seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """(picked point positions, their RGB thumbnails): :func:`grid_pick` on ``coords``, then
    ``load_image(indices[p])`` (a dataset's loader) for each picked point only."""
    picked = grid_pick(coords, grid, seed=seed)
    images = [thumbnail_array(load_image(int(indices[p])), size) for p in picked]
    return picked, images
