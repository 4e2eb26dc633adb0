"""What ``task=dense`` writes per layer: the layer figure, the matches figures, the arrays
behind them (``dense_<layer>.npz``), the basis (``pca_basis_<layer>.npz``), the loggers'
scalars and figures, and the layer's summary entry; then the norms-by-layer figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning.loggers import Logger

from selfsup_vis.data.image_files import slug
from selfsup_vis.dense.compute import LayerResult
from selfsup_vis.dense.norms import NormStats
from selfsup_vis.dense.plots import layer_figure, matches_figure, norms_figure
from selfsup_vis.plotting.log import log_figure, log_scalars, save_figure
from selfsup_vis.plotting.provenance import ProvenanceLike
from selfsup_vis.utils.io import write_with


def save_arrays(path: Path, res: LayerResult) -> Path:
    arrays = {"rgb": res.rgb.numpy(), "pc1": res.pc1.numpy(), "foreground": res.foreground.numpy(),
              "similarity": res.similarity.numpy(), "query": np.array(res.query), "norms": res.norms.numpy(),
              "outliers": res.outliers.numpy()}
    for k, (i, j, m) in enumerate(res.matches):
        arrays[f"matches_{k}"] = np.stack([np.full(len(m.a), i), m.a.numpy(), np.full(len(m.a), j), m.b.numpy()], 1)
        arrays[f"matches_{k}_similarity"] = m.similarity.numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return write_with(path, write)


def write_layer(out: Path, loggers: Sequence[Logger], res: LayerResult, display: np.ndarray, names: Sequence[str],
                masks: np.ndarray | None, title: str, settings: str, prov: ProvenanceLike, formats: Sequence[str],
                max_rows: int) -> dict[str, Any]:
    """Figures, arrays, basis and loggers for one layer; returns its summary entry."""
    base = slug(res.layer)
    fig = layer_figure(display, res, names, f"{title} · layer {res.layer}", settings, prov, masks, max_rows)
    files = save_figure(fig, out / f"dense_{base}", formats)
    log_figure(loggers, f"dense/{base}", fig, step=0)
    fig.clf()
    for i, j, m in res.matches:
        fig = matches_figure(display[i], display[j], res.grid, m.a, m.b, m.similarity, m.num_mutual,
                             f"{title} · layer {res.layer} · {names[i]} ↔ {names[j]}", prov)
        files += save_figure(fig, out / "matches" / f"{base}_{i:03d}_{j:03d}", formats)
        fig.clf()
    entry: dict[str, Any] = {
        "layer": res.layer, "grid": list(res.grid), "figures": [str(f) for f in files],
        "arrays": str(save_arrays(out / f"dense_{base}.npz", res)),
        "query": {"image": names[res.query[0]], "cell": list(res.query[1:])},
        "foreground_fraction": float(res.foreground.double().mean()),
        "norms": res.norm_stats.as_dict(), "pca_seconds": res.pca_seconds, "notes": res.notes,
        "matches": [{"images": [names[i], names[j]], "mutual": m.num_mutual, "drawn": len(m.a),
                     "mean_similarity": float(m.similarity.mean()) if len(m.a) else None} for i, j, m in res.matches],
    }
    if res.basis is not None:
        b = res.basis
        entry["basis"] = {"file": str(b.save(out / f"pca_basis_{base}.npz")), "threshold": b.threshold,
                          "threshold_rule": b.threshold_rule, "fg_sign": b.fg_sign, "sign_rule": b.sign_rule,
                          "explained_first": b.first.explained.tolist(),
                          "explained_second": b.second.explained.tolist() if b.second is not None else None,
                          "reused_from": b.provenance.get("file")}  # task.basis_from: applied, not refitted
    scalars = {f"dense/{base}/outlier_fraction": res.norm_stats.outlier_fraction}
    if res.iou is not None:
        entry["iou"] = res.iou
        scalars[f"dense/{base}/foreground_iou"] = res.iou["iou"]
    log_scalars(loggers, scalars, step=0)
    return entry


def write_norms(out: Path, loggers: Sequence[Logger], stats: Mapping[str, NormStats], title: str,
                prov: ProvenanceLike, formats: Sequence[str]) -> list[str]:
    fig = norms_figure(stats, title, prov)
    files = save_figure(fig, out / "dense_norms_by_layer", formats)
    log_figure(loggers, "dense/norms_by_layer", fig, step=0)
    fig.clf()
    return [str(f) for f in files]
