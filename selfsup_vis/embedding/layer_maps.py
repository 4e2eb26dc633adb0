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
from selfsup_vis.embedding.labels import Labeling, footer_text
from selfsup_vis.embedding.large import optimised_mask, placement_note
from selfsup_vis.embedding.plots import plot_embedding, plot_embedding_grid
from selfsup_vis.embedding.quality import HEADLINE_K, embedding_quality
from selfsup_vis.embedding.sampled_quality import placement_knn, sampled_quality
from selfsup_vis.embedding.thumbnails import load_thumbnails
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.utils.io import save_npy, write_csv

#: the layers of a run are ranked by this quality number of the run's labeling (then
#: trustworthiness); a numeric labeling by its kNN-regression R² at the same k
RANK_METRIC = f"knn_feat@{HEADLINE_K}"
RANK_METRIC_R2 = f"knn_feat_r2@{HEADLINE_K}"


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

    @property
    def method(self) -> str:
        """How the map was made, in one line (the figures' footer)."""
        return str(self.params.get("description", {}).get("text") or self.params.get("space", ""))

    def summary(self, files: Sequence[Path]) -> dict[str, Any]:
        """The layer's block of summary.json (``layers.<layer>``): ``method`` (t-SNE / UMAP /
        PCA, backend, effective perplexity and why it was lowered, iterations, space) first."""
        return {"method": self.params.get("description"), "quality": self.quality, "embedding": self.params,
                "embedding_s": self.seconds, "feature_dim": self.feature_dim, "files": [str(f) for f in files]}


def map_layer(layer: str, features: np.ndarray, labels: np.ndarray, params: EmbedParams, *,
              owner: str, quality_sample: int, extra_labels: Mapping[str, np.ndarray] | None = None,
              labeling: str = "label", exclude_groups: np.ndarray | None = None,
              exclusion_note: str | None = None, phase: Callable[[str], Any] | None = None) -> LayerMap:
    """Embed ``features`` (N, D; a memmap is fine) with ``params`` and score the map against
    ``labels`` — the values of the labeling named ``labeling``, whose numbers are the top-level
    ones (``quality['labeling']``) — and ``extra_labels`` in the same space; ``exclude_groups``
    (cue-conflict source images) are left out of every kNN vote. When t-SNE optimised only a
    sample (large N) the 2-D kNN of placed and optimised rows is scored apart, and noted."""
    what = f"embedding {layer} ({features.shape[0]}×{features.shape[1]}) with {resolve_backend(params.backend)}"
    with phase(what) if phase is not None else nullcontext():
        try:
            res = compute_embedding(np.asarray(features, dtype=np.float32), params)
        except ValueError as err:
            raise ValueError(f"layer {layer!r} of {owner}: {err}") from err
    quality = {"labeling": labeling, **embedding_quality(
        np.asarray(features), res.coords, labels, seed=params.seed, metric=params.metric,
        standardize=params.standardize, extra_labels=dict(extra_labels or {}), exclude_groups=exclude_groups,
        exclusion_note=exclusion_note)}
    optimised = optimised_mask(len(res.coords), res.params.get("large", {}))
    if optimised is not None:  # t-SNE optimised a sample (task.embed_sample), placed the rest
        quality.update(placement_knn(res.coords, labels, optimised, seed=params.seed, sample=quality_sample))
    return LayerMap(layer, res.coords, quality, res.params, res.seconds, int(features.shape[1]),
                    placement_note(res.params.get("large", {}), quality))


def map_features(layer: str, features: Any, labels: np.ndarray | None, params: EmbedParams, *, source: str,
                 quality_sample: int, optimised_rows_file: Path, phase: Callable[[str], Any],
                 exclude_groups: np.ndarray | None = None, exclusion_note: str | None = None) -> LayerMap:
    """:func:`map_layer` for features the user already has (``FeatureShards``): from
    ``params.large_n`` rows on they are read in chunks and never copied whole, and the quality
    numbers are measured on a seeded ``quality_sample`` over all rows (placed and optimised
    rows apart, whose indices go to ``optimised_rows_file``). ``exclude_groups`` as in
    :func:`map_layer` (all rows in memory only; the sampled path refuses it)."""
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
            if exclude_groups is not None:
                raise ValueError(f"task.features={source}: {n} cue-conflict stimuli need exact kNN with same-source "
                                 f"neighbours excluded; raise task.quality_sample to at least {n}")
            quality = sampled_quality(features, res.coords, labels, seed=params.seed, sample=quality_sample,
                                      metric=params.metric, standardize=params.standardize, optimised=optimised)
        else:
            quality = embedding_quality(x if not large else features.load(), res.coords, labels, seed=params.seed,
                                        metric=params.metric, standardize=params.standardize,
                                        exclude_groups=exclude_groups, exclusion_note=exclusion_note)
    return LayerMap(layer, res.coords, quality, res.params, res.seconds, int(features.dim),
                    placement_note(res.params.get("large", {}), quality))


def write_layer_map(out: Path, layer: str, coords: np.ndarray, labels: np.ndarray, names: Sequence[str],
                    classes: Sequence[str], others: Mapping[str, Labeling] | None = None) -> list[Path]:
    """``embedding_<layer>.npy`` (float32 coordinates) and ``embedding_<layer>.csv`` (path,
    label, class, x, y: what report.html, replot and users' scripts read back; ``label`` /
    ``class`` are the run's labeling, see :meth:`Labeling.categorical`), then one column per
    labeling in ``others`` (``label:<name>``: its class or value)."""
    name = layer_file_name(layer)
    npy = save_npy(out / f"embedding_{name}.npy", coords.astype(np.float32))
    extra = {f"label:{k}": lab.categorical() for k, lab in (others or {}).items()}

    rows = ([n, int(lab), classes[int(lab)], f"{x:.6g}", f"{y:.6g}",
             *(cls[int(codes[i])] for codes, cls in extra.values())]
            for i, (n, lab, (x, y)) in enumerate(zip(names, labels, coords)))
    return [npy, write_csv(out / f"embedding_{name}.csv", ["path", "label", "class", "x", "y", *extra], rows)]


def read_layer_map(run_dir: Path, layer: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coordinates, labels, class names) of ``embedding_<layer>.csv`` in an earlier run
    directory (the names of the labeling the run was coloured by, from its ``class`` column)."""
    with open(run_dir / f"embedding_{layer_file_name(layer)}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    names = {int(r["label"]): r["class"] for r in rows}
    return (np.array([[float(r["x"]), float(r["y"])] for r in rows], dtype=np.float32), labels,
            [names.get(i, str(i)) for i in range(int(labels.max()) + 1 if labels.size else 0)])


@dataclass(frozen=True)
class EarlierRun:
    """An earlier tsne run read back for ``task.replot``: its summary, its provenance (marked
    as read from ``path``) and each layer's saved map."""

    path: Path
    summary: dict[str, Any]
    provenance: Provenance
    maps: list[tuple[str, np.ndarray, np.ndarray, list[str], dict[str, Any]]]  # layer, coords, labels,
    # class names, the layer's block of summary.json

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
        maps = [(layer, *read_layer_map(src, layer), info) for layer, info in old["layers"].items()]
        return cls(src, old, prov, maps)

    def figures(self) -> list[tuple[str, Figure]]:
        """Each layer's figure, then the grid, drawn as the run first drew them."""
        model, colour = self.summary["model"], self.summary.get("color_by", "label")

        def footer(info: dict[str, Any]) -> str:
            method = (info.get("method") or {}).get("text") or info.get("embedding", {}).get("space", "")
            return f"{method}\ncolour and numbers: {colour}"

        out = [(layer, plot_embedding(xy, lab, cls, f"{model} · {layer}", info["quality"], footer=footer(info),
                                      color_label=colour))
               for layer, xy, lab, cls, info in self.maps]
        last = self.maps[-1]
        grid = plot_embedding_grid([(m[0], m[1]) for m in self.maps], last[2], last[3],
                                   {m[0]: m[4]["quality"] for m in self.maps}, footer=footer(last[4]),
                                   color_label=colour)
        return out + [("", grid)]


def layer_figure(m: LayerMap, colour: Labeling, title: str, *, load_image: Callable[[int], Any] | None = None,
                 indices: np.ndarray | None = None, thumbnail_grid: int = 20, thumbnail_size: int = 48,
                 density: bool | None = None) -> Figure:
    """The map coloured by ``colour``, its quality numbers in the title block, the space, the
    colouring and any placement note in the footer; with ``load_image`` image thumbnails on a
    ``thumbnail_grid`` grid."""
    thumbs = (load_thumbnails(m.coords, load_image, indices, thumbnail_grid, thumbnail_size, m.params["seed"])
              if load_image is not None else None)
    return plot_embedding(m.coords, colour.values, colour.classes, title, m.quality,
                          footer=footer_text(m.method, colour, _exclusion(m)) + (f"\n{m.note}" if m.note else ""),
                          color_label=colour.name, thumbnails=thumbs, thumbnail_grid=thumbnail_grid,
                          density=density)


def _exclusion(m: LayerMap) -> str | None:
    return "same-source neighbours excluded (cue-conflict)" if m.quality.get("knn_exclusion") else None


def grid_figure(maps: Sequence[LayerMap], colour: Labeling) -> Figure:
    """Every layer's map in one grid, the same colours everywhere; the footer says how the
    maps were made (that of the first layer: every layer has the same samples and settings)."""
    return plot_embedding_grid([(m.layer, m.coords) for m in maps], colour.values, colour.classes,
                               {m.layer: m.quality for m in maps},
                               footer=footer_text(maps[0].method, colour, _exclusion(maps[0])),
                               color_label=colour.name)


def rank_layers(maps: Sequence[LayerMap]) -> list[dict[str, Any]]:
    """Layers best first by kNN@HEADLINE_K in feature space of the run's labeling (kNN-R² for
    a numeric one; NaN last), then trustworthiness."""
    key = RANK_METRIC_R2 if maps and RANK_METRIC_R2 in maps[0].quality else RANK_METRIC
    ranked = sorted(maps, key=lambda m: (-np.nan_to_num(m.quality.get(key, np.nan), nan=-1.0),
                                         -m.quality.get("trustworthiness", 0.0)))
    return [{"layer": m.layer, "labeling": m.quality.get("labeling", "label"), key: m.quality.get(key),
             "trustworthiness": m.quality.get("trustworthiness")} for m in ranked]
