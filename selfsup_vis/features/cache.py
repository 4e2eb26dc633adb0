"""A feature cache keyed by everything that determines the features, so sweeps extract once.

An entry is a directory ``<root>/<model>-<key>/`` with ``meta.json`` (the key's fields),
``labels.npy``, ``indices.npy``, ``paths.txt`` and ``features/<layer>.npy``. A later run with
the same model, checkpoint, data subset and pooling reuses every layer already there and
extracts only the missing ones. An entry whose meta or arrays do not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.utils.download import cache_root, sha256_of
from selfsup_vis.utils.io import save_npy, write_json, write_text

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    return cache_root("features")


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    return sha256_of(path)  # memoised per (path, size, mtime)


def checkpoint_fingerprint(checkpoint: str | None) -> str | None:
    """sha256 of a local checkpoint file; a URL stands for itself (its download is verified)."""
    if not checkpoint:
        return None
    p = Path(checkpoint).expanduser()
    if p.is_file():
        st = p.stat()
        return _file_sha256(str(p.resolve()), st.st_size, st.st_mtime)
    return f"url:{checkpoint}"


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


class FeatureCacheEntry:
    """One cache entry (see module docstring)."""

    def __init__(self, root: Path, meta: dict[str, Any]) -> None:
        self.meta = meta
        key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{meta.get('model', 'model')}-{key}"
        self.features_dir = self.dir / "features"

    def layer_path(self, layer: str) -> Path:
        return self.features_dir / f"{layer_file_name(layer)}.npy"

    def validate(self, n: int) -> None:
        """Rebuild (empty) the entry when its meta or arrays do not match what we expect."""
        if not self.dir.exists():
            return
        problem = None
        meta_file = self.dir / "meta.json"
        if not meta_file.is_file():
            problem = "no meta.json"
        elif json.loads(meta_file.read_text()) != json.loads(json.dumps(self.meta, default=str)):
            problem = "meta.json differs from this run's model/data/pooling"
        elif not (self.dir / "labels.npy").is_file() or len(np.load(self.dir / "labels.npy")) != n:
            problem = "labels.npy missing or of another length"
        else:
            for f in self.features_dir.glob("*.npy"):
                if np.load(f, mmap_mode="r").shape[0] != n:
                    problem = f"{f.name} has another number of rows"
        if problem:
            log.warning("feature cache %s does not match (%s): rebuilding it", self.dir, problem)
            shutil.rmtree(self.dir)

    def missing_layers(self, layers: Sequence[str]) -> list[str]:
        return [layer for layer in layers if not self.layer_path(layer).is_file()]

    def write_index(self, labels: np.ndarray, indices: np.ndarray, names: Sequence[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_npy(self.dir / "labels.npy", np.asarray(labels, dtype=np.int64))
        save_npy(self.dir / "indices.npy", np.asarray(indices, dtype=np.int64))
        write_text(self.dir / "paths.txt", "".join(f"{n}\n" for n in names))
        write_json(self.dir / "meta.json", self.meta)

    def link_into(self, run_features: Path, layers: Sequence[str]) -> None:
        """Make the run directory show the features: hard links (no copy) or symlinks."""
        run_features.mkdir(parents=True, exist_ok=True)
        for layer in layers:
            src, dst = self.layer_path(layer), run_features / self.layer_path(layer).name
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            try:
                os.link(src, dst)
            except OSError:
                dst.symlink_to(src.resolve())
