"""The provenance block of a run report and of the loggers' hyperparameters: model, weights
(checkpoint sha256 or RANDOM), dataset/split/n, seed, package version, git commit.

It prefers the ``provenance`` record a task writes into summary.json
(``selfsup_vis.checkpoints.provenance.Provenance``) and fills the rest from the summary's
own fields and the resolved config, so runs of tasks without one still say where they came from.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from selfsup_vis.checkpoints.provenance import file_sha256

PACKAGE = "selfsup-vis"


@lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source checkout the package runs from (``+dirty`` with local
    changes); None when it is not a git checkout."""
    src = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        cur: Any = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        if cur is not None:
            return cur
    return None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def run_provenance(config: Mapping[str, Any] | None, summary: Mapping[str, Any] | None
                   ) -> dict[str, Any]:
    """A flat provenance dict (str/number/bool/None values) for the report and the loggers."""
    config = config or {}
    summary = summary or {}
    record = summary.get("provenance") if isinstance(summary.get("provenance"), Mapping) else {}
    checkpoint = _get(record, "checkpoint") or _get(summary, "checkpoint") or _get(config, "model.checkpoint")
    sha = _get(record, "checkpoint_sha256")
    if sha is None and checkpoint:
        sha = file_sha256(checkpoint) if not str(checkpoint).startswith(("http://", "https://")) else None
    pretrained = bool(_get(config, "model.pretrained"))
    random = record.get("random") if "random" in record else (not checkpoint and not pretrained)
    weights = record.get("weights") or (
        f"checkpoint {checkpoint}" + (f" sha256 {sha[:10]}" if sha else "") if checkpoint
        else "timm pretrained" if pretrained else "RANDOM WEIGHTS")
    out: dict[str, Any] = {
        "task": _get(record, "task") or _get(summary, "task") or _get(config, "task.name"),
        "model": _get(record, "model") or _get(summary, "model") or _get(config, "model.name"),
        "weights": "RANDOM WEIGHTS" if random else weights,
        "random": bool(random),  # a boolean to filter runs on in TensorBoard / W&B
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": sha if checkpoint else ("RANDOM" if random else None),
        "random_parts": ", ".join(record.get("random_parts") or []) or None,
        "dataset": _get(record, "dataset") or _get(summary, "dataset") or _get(config, "dataset.name"),
        "split": _get(record, "split") or _get(summary, "split", "train_split") or _get(config, "task.split"),
        "n": _get(record, "n") or _get(summary, "n_samples", "n"),
        "seed": _first(_get(record, "seed"), _get(summary, "seed"), _get(config, "task.seed", "seed")),
        "package_version": package_version(),
        "git_commit": git_commit(),
    }
    if record.get("flag"):
        out["flag"] = record["flag"]
    return out
