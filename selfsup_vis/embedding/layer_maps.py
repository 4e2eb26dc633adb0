"""One 2-D map per layer: the embedding, its quality numbers and parameters as a typed
:class:`LayerMap`, its coordinate files, and its figures.

``task=tsne`` is "one :func:`map_layer` per layer, :func:`write_layer_map`, :func:`layer_figure`,
then :func:`grid_figure` and :func:`rank_layers`"; ``task=tsne task.replot=true`` reads the
maps back with :func:`read_layer_map`. Nothing here knows about runs, loggers or configs
beyond the :class:`~selfsup_vis.embedding.backends.EmbedParams` it is given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from selfsup_vis.checkpoints.provenance import Provenance
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding, resolve_backend
from selfsup_vis.embedding.labels import Labeling, footer_text, quality_for
from selfsup_vis.embedding.large import optimised_mask, placement_note
from selfsup_vis.embedding.plots import plot_embedding, plot_embedding_grid
from selfsup_vis.embedding.quality import embedding_quality
from selfsup_vis.embedding.sampled_quality import placement_knn, sampled_quality
from selfsup_vis.embedding.space import describe_space
from selfsup_vis.embedding.thumbnails import load_thumbnails
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.utils.io import save_npy, write_with

#: the layers of a run are ranked by this quality number (then trustworthiness)
RANK_METRIC = "knn_feat@20"


@dataclass(frozen=True)
class LayerMap:
    """The 2-D map of one layer: ``coords`` (N, 2), ``quality`` (kNN numbers,
    trustworthiness, ...), ``params`` (the embedding parameters actually used), the time it
    took, the features' dimension and, for large N, a note on the placed rows."""

    layer: str
    coords: np.ndarray
    quality: dict[str, Any]
    params: dict[str, Any]
    seconds: float
    feature_dim: int
    note: str | None = None

    @property
    def file_name(self) -> str:
        """The layer as it appears in file names (``embedding_<file_name>.csv``)."""
        return layer_file_name(self.layer)

    def summary(self, files: Sequence[Path]) -> dict[str, Any]:
        """The layer's block of summary.json (``layers.<layer>``)."""
        return {"quality": self.quality, "embedding": self.params, "embedding_s": self.seconds,
                "feature_dim": self.feature_dim, "files": [str(f) for f in files]}


def map_layer(layer: str, features: np.ndarray, labels: np.ndarray, params: EmbedParams, *,
              owner: str, quality_sample: int, extra_labels: Mapping[str, np.ndarray] | None = None,
              phase: Callable[[str], Any] | None = None) -> LayerMap:
    """Embed ``features`` (N, D; a memmap is fine) with ``params`` and score the map against
    ``labels`` (and ``extra_labels``) in the same space. When t-SNE optimised only a sample
    (large N) the 2-D kNN of placed and optimised rows is scored apart, and noted."""
    what = f"embedding {layer} ({features.shape[0]}×{features.shape[1]}) with {resolve_backend(params.backend)}"
    with phase(what) if phase is not None else nullcontext():
        try:
            res = compute_embedding(np.asarray(features, dtype=np.float32), params)
        except ValueError as err:
            raise ValueError(f"layer {layer!r} of {owner}: {err}") from err
    quality = embedding_quality(np.asarray(features), res.coords, labels, seed=params.seed, metric=params.metric,
                                standardize=params.standardize, extra_labels=dict(extra_labels or {}))
    optimised = optimised_mask(len(res.coords), res.params.get("large", {}))
    if optimised is not None:  # t-SNE optimised a sample (task.embed_sample), placed the rest
        quality.update(placement_knn(res.coords, labels, optimised, seed=params.seed, sample=quality_sample))
    return LayerMap(layer, res.coords, quality, res.params, res.seconds, int(features.shape[1]),
                    placement_note(res.params.get("large", {}), quality))


def map_features(layer: str, features: Any, labels: np.ndarray | None, params: EmbedParams, *, source: str,
                 quality_sample: int, optimised_rows_file: Path, phase: Callable[[str], Any]) -> LayerMap:
    """:func:`map_layer` for features the user already has (``FeatureShards``): from
    ``params.large_n`` rows on they are read in chunks and never copied whole, and the quality
    numbers are measured on a seeded ``quality_sample`` over all rows (placed and optimised
    rows apart, whose indices go to ``optimised_rows_file``)."""
    n = len(features)
    large = params.large_n is not None and n >= params.large_n
    x = features if large else features.load()
    with phase(f"embedding {layer} ({n}×{features.dim}) with {resolve_backend(params.backend)}"):
        try:
            res = compute_embedding(x, params)
        except ValueError as err:
            raise ValueError(f"task.features={source}: {err}") from err
    optimised = optimised_mask(n, res.params.get("large", {}))  # None unless rows were placed
    if optimised is not None:
        res.params["large"]["optimised_rows_file"] = str(save_npy(optimised_rows_file, np.flatnonzero(optimised)))
    with phase("quality numbers"):
        if n > quality_sample or optimised is not None:  # over all N, placed and optimised
            quality = sampled_quality(features, res.coords, labels, seed=params.seed, sample=quality_sample,
                                      metric=params.metric, standardize=params.standardize, optimised=optimised)
        else:
            quality = embedding_quality(x if not large else features.load(), res.coords, labels, seed=params.seed,
                                        metric=params.metric, standardize=params.standardize)
    return LayerMap(layer, res.coords, quality, res.params, res.seconds, int(features.dim),
                    placement_note(res.params.get("large", {}), quality))


def write_layer_map(out: Path, layer: str, coords: np.ndarray, labels: np.ndarray, names: Sequence[str],
                    classes: Sequence[str]) -> list[Path]:
    """``embedding_<layer>.npy`` (float32 coordinates) and ``embedding_<layer>.csv`` (path,
    label, class, x, y: what report.html, replot and users' scripts read back)."""
    name = layer_file_name(layer)
    npy = save_npy(out / f"embedding_{name}.npy", coords.astype(np.float32))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "class", "x", "y"])
            for n, lab, (x, y) in zip(names, labels, coords):
                w.writerow([n, int(lab), classes[int(lab)], f"{x:.6g}", f"{y:.6g}"])

    return [npy, write_with(out / f"embedding_{name}.csv", write_csv)]


def read_layer_map(run_dir: Path, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates, labels) of ``embedding_<layer>.csv`` in an earlier run directory."""
    with open(run_dir / f"embedding_{layer_file_name(layer)}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32),
            np.array([int(r["label"]) for r in rows]))


@dataclass(frozen=True)
class EarlierRun:
    """An earlier tsne run read back for ``task.replot``: its summary, its provenance (marked
    as read from ``path``) and each layer's saved map."""

    path: Path
    summary: dict[str, Any]
    provenance: Provenance
    maps: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]  # layer, coords, labels, quality

    @classmethod
    def read(cls, from_dir: str | None) -> EarlierRun:
        if not from_dir:
            raise ValueError("task.replot=true needs task.from_dir=<an earlier tsne run directory>")
        src = Path(from_dir)
        if not (src / "summary.json").is_file():
            raise FileNotFoundError(f"task.from_dir: no summary.json in {src}")
        old = json.loads((src / "summary.json").read_text())
        prov = (Provenance.from_dict({**old["provenance"], "sources": [str(src)]}) if "provenance" in old else
                Provenance(task="tsne", model=str(old.get("model")), weights="unknown (replotted from a run "
                           "without provenance)", sources=[str(src)]))
        maps = [(layer, *read_layer_map(src, layer), info["quality"]) for layer, info in old["layers"].items()]
        return cls(src, old, prov, maps)

    def figures(self) -> list[tuple[str, Figure]]:
        """Each layer's figure, then the grid, drawn as the run first drew them."""
        classes, model = self.summary["classes"], self.summary["model"]
        out = [(layer, plot_embedding(xy, lab, classes, f"{model} · {layer}", q)) for layer, xy, lab, q in self.maps]
        grid = plot_embedding_grid([(la, xy) for la, xy, _, _ in self.maps], self.maps[-1][2], classes,
                                   {la: q for la, _, _, q in self.maps})
        return out + [("", grid)]


def layer_figure(m: LayerMap, colour: Labeling, title: str, *, load_image: Callable[[int], Any] | None = None,
                 indices: np.ndarray | None = None, thumbnail_grid: int = 20, thumbnail_size: int = 48,
                 density: bool | None = None) -> Figure:
    """The map coloured by ``colour``, its quality numbers in the title block, the space, the
    colouring and any placement note in the footer; with ``load_image`` image thumbnails on a
    ``thumbnail_grid`` grid."""
    thumbs = (load_thumbnails(m.coords, load_image, indices, thumbnail_grid, thumbnail_size, m.params["seed"])
              if load_image is not None else None)
    return plot_embedding(m.coords, colour.values, colour.classes, title, quality_for(m.quality, colour),
                          footer=footer_text(m.params["space"], colour) + (f"\n{m.note}" if m.note else ""),
                          color_label=colour.name, thumbnails=thumbs, thumbnail_grid=thumbnail_grid,
                          density=density)


def grid_figure(maps: Sequence[LayerMap], colour: Labeling, params: EmbedParams) -> Figure:
    """Every layer's map in one grid, the same colours everywhere."""
    return plot_embedding_grid([(m.layer, m.coords) for m in maps], colour.values, colour.classes,
                               {m.layer: quality_for(m.quality, colour) for m in maps},
                               footer=footer_text(describe_space(params.metric, params.standardize), colour),
                               color_label=colour.name)


def rank_layers(maps: Sequence[LayerMap]) -> list[dict[str, Any]]:
    """Layers best first by kNN@20 in feature space (NaN last), then trustworthiness."""
    ranked = sorted(maps, key=lambda m: (-np.nan_to_num(m.quality.get(RANK_METRIC, np.nan), nan=-1.0),
                                         -m.quality.get("trustworthiness", 0.0)))
    return [{"layer": m.layer, RANK_METRIC: m.quality.get(RANK_METRIC),
             "trustworthiness": m.quality.get("trustworthiness")} for m in ranked]
