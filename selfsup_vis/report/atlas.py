"""Export a tsne run to Embedding Atlas (Apple's ``embedding-atlas``): one parquet table.

Columns (one row per point, in the order of ``embedding_<layer>.csv``):

==================  =======================================  ================================
column              type                                     what
==================  =======================================  ================================
``id``              int64                                    row number (what ``ids`` refer to)
``path``            string                                   image path / name
``label``           int64                                    class index
``class``           string                                   class name
``x_<layer>``       float32                                  2-D coordinates of each layer
``y_<layer>``       float32
``image``           binary (PNG bytes)                       thumbnail
``neighbors_<layer>``  struct<ids: list<int64>,              k nearest neighbours in that
                    distances: list<float32>>                layer's feature space (cosine
                                                             distance, ``1 - cos``)
``neighbors``       same                                     = ``neighbors_<first layer>``
==================  =======================================  ================================

Open it with ``embedding-atlas <file>.parquet --x x_<layer> --y y_<layer> --image image
--neighbors neighbors_<layer>`` (Embedding Atlas documents neighbours as
``{"ids": [...], "distances": [...]}``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from selfsup_vis.utils.io import write_with

FILE = "atlas.parquet"


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="png", optimize=True)
    return buf.getvalue()


def nearest_neighbors(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, distances) of the ``k`` nearest other points of each row, by cosine distance
    (the space the report's kNN accuracy is measured in)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float32)
    k = min(k, x.shape[0] - 1)
    if k < 1:
        return np.zeros((x.shape[0], 0), np.int64), np.zeros((x.shape[0], 0), np.float32)
    dist, ids = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x)
    return ids[:, 1:].astype(np.int64), dist[:, 1:].astype(np.float32)


def export_atlas(path: str | Path, coords: Mapping[str, np.ndarray], labels: np.ndarray,
                 classes: Sequence[str], paths: Sequence[str],
                 thumbnails: Mapping[int, np.ndarray], features: Mapping[str, np.ndarray],
                 k: int = 15) -> Path:
    """Write the parquet table described in the module docstring (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(paths)
    labels = np.asarray(labels, dtype=np.int64)
    cols: dict[str, pa.Array] = {
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "path": pa.array([str(p) for p in paths], pa.string()),
        "label": pa.array(labels),
        "class": pa.array([str(classes[i]) if 0 <= i < len(classes) else str(i) for i in labels], pa.string()),
    }
    for layer, xy in coords.items():
        if xy.shape != (n, 2):
            raise ValueError(f"atlas export: layer {layer} has {xy.shape} coordinates for {n} points")
        cols[f"x_{layer}"] = pa.array(np.asarray(xy[:, 0], dtype=np.float32))
        cols[f"y_{layer}"] = pa.array(np.asarray(xy[:, 1], dtype=np.float32))
    cols["image"] = pa.array([_png(thumbnails[i]) if i in thumbnails else None for i in range(n)], pa.binary())
    neighbor_type = pa.struct([("ids", pa.list_(pa.int64())), ("distances", pa.list_(pa.float32()))])
    first = None
    for layer, feats in features.items():
        ids, dist = nearest_neighbors(feats, k)
        arr = pa.array([{"ids": i.tolist(), "distances": d.tolist()} for i, d in zip(ids, dist)], neighbor_type)
        cols[f"neighbors_{layer}"] = arr
        first = arr if first is None else first
    if first is not None:
        cols["neighbors"] = first
    table = pa.table(cols)
    return write_with(path, lambda tmp: pq.write_table(table, tmp))
