"""The few numbers that say how a run went, read from its summary.json.

They become TensorBoard hparam metrics, W&B summary values, report.html's headline table and
the sweep table's columns. Every task's typed summary (``selfsup_vis/report/summaries.py``)
writes its own ``headline`` dict into summary.json, and that is what is read; summaries of
runs made before (or by tasks not yet typed) get the same numbers derived from their keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from selfsup_vis.report.summaries import KNN_KEYS


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def headline_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """``{name: number}`` for the run's headline numbers (NaN kept, missing left out).

    tsne: ``knn_feat@20/<layer>``, ``knn_2d@20/<layer>``, ``trustworthiness/<layer>``;
    shape_bias: ``shape_bias``; plot_shape_bias: ``shape_bias/<model>``; reconstruct:
    ``reconstruction_error``; pretrain: ``final_loss`` (and the last reconstruction error).
    """
    if not summary:
        return {}
    explicit = summary.get("headline")
    if isinstance(explicit, Mapping):
        return {str(k): float(v) for k, v in explicit.items() if _num(v) is not None}
    out: dict[str, float] = {}
    layers = summary.get("layers")
    if isinstance(layers, Mapping):
        for layer, info in layers.items():
            quality = info.get("quality", {}) if isinstance(info, Mapping) else {}
            for key in KNN_KEYS:
                v = _num(quality.get(key))
                if v is not None:
                    out[f"{key}/{layer}"] = v
    if (v := _num(summary.get("shape_bias"))) is not None:
        out["shape_bias"] = v
    models = summary.get("models")
    if isinstance(models, Mapping):
        for name, info in models.items():
            if isinstance(info, Mapping) and (v := _num(info.get("shape_bias"))) is not None:
                out[f"shape_bias/{name}"] = v
    if (v := _num(summary.get("mean_masked_error"))) is not None:
        out["reconstruction_error"] = v
    final = summary.get("final_metrics")
    if isinstance(final, Mapping):
        for key in ("train/loss", "train/loss_epoch", "loss"):
            if (v := _num(final.get(key))) is not None:
                out["final_loss"] = v
                break
    recon = summary.get("reconstruction_error")
    if isinstance(recon, list) and recon and isinstance(recon[-1], Mapping):
        if (v := _num(recon[-1].get("error"))) is not None:
            out["reconstruction_error"] = v
    return out


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Only the finite numbers (TensorBoard's HPARAMS tab cannot show NaN)."""
    return {k: v for k, v in metrics.items() if not math.isnan(v) and not math.isinf(v)}
