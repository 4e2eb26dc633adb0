"""A feature cache keyed by everything that determines the features, so sweeps extract once.

An entry is a directory ``<root>/<model>-<key>/`` with ``meta.json`` (the key's fields),
``labels.npy``, ``indices.npy``, ``paths.txt`` and ``features/<layer>.npy``. A later run with
the same key reuses every layer already there and extracts only the missing ones. An entry
whose meta or arrays do not match is rebuilt.

The key (the caller's ``meta``) must hold everything the features depend on; for a stale
entry is a plausible figure of the wrong thing. Besides model, checkpoint hash, data subset
and pooling that means: each image file's identity (:func:`file_identity`, size + mtime_ns,
so images overwritten in place are re-extracted), the init seed of a model without a
checkpoint (random weights differ per seed) and the preprocessing.

Runs sharing a cache take the entry's file lock (:meth:`FeatureCacheEntry.lock`) while they
check, build or copy it: a second run waits instead of deleting an entry being written. The
run directory gets hard links to the cached arrays (or copies on another file system), never
symlinks that dangle when the cache is cleaned.
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
from filelock import FileLock, Timeout

from selfsup_vis.data.folders import display_name
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.utils.download import cache_root, sha256_of
from selfsup_vis.utils.io import copy_file, save_npy, write_json, write_text

log = logging.getLogger(__name__)

#: bumped when the meaning of an entry changes, so older entries are never reused
CACHE_FORMAT = 2


def default_cache_root() -> Path:
    return cache_root("features")


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)  # memoised per (path, size, mtime_ns)


def checkpoint_fingerprint(checkpoint: str | None) -> str | None:
    """sha256 of a local checkpoint file; a URL stands for itself (its download is verified)."""
    if not checkpoint:
        return None
    p = Path(checkpoint).expanduser()
    if p.is_file():
        st = p.stat()
        return _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return f"url:{checkpoint}"


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def file_identity(paths: Sequence[str | os.PathLike]) -> str:
    """Digest of (path, size, mtime_ns) of every file, in order: changes when any image is
    replaced, rewritten in place or touched. A missing file is an error naming it."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as err:
            raise FileNotFoundError(f"image file vanished or unreadable: {display_name(p)} ({err.strerror})") from err
        h.update(os.fsencode(p) + b"\0" + f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


class FeatureCacheEntry:
    """One cache entry (see module docstring)."""

    def __init__(self, root: Path, meta: dict[str, Any], dir: Path | None = None) -> None:
        """``dir``: a private entry at that path instead of the keyed one under ``root``."""
        self.meta = {"cache_format": CACHE_FORMAT, **meta}
        key = hashlib.sha256(json.dumps(self.meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(dir) if dir is not None else Path(root) / f"{meta.get('model', 'model')}-{key}"
        self.features_dir = self.dir / "features"

    def layer_path(self, layer: str) -> Path:
        return self.features_dir / f"{layer_file_name(layer)}.npy"

    def lock(self) -> FileLock:
        """The entry's file lock (``<entry>.lock`` beside it): hold it to check, build or copy
        the entry. ``with entry.lock():`` waits (logging once) while another run holds it."""
        return _LoudLock(str(self.dir.with_name(self.dir.name + ".lock")))

    def validate(self, n: int) -> None:
        """Rebuild (empty) the entry when its meta or arrays do not match what we expect."""
        if not self.dir.exists():
            return
        problem = None
        meta_file = self.dir / "meta.json"
        if not meta_file.is_file():
            problem = "no meta.json"
        elif json.loads(meta_file.read_text(encoding="utf-8")) != json.loads(json.dumps(self.meta, default=str)):
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
        write_text(self.dir / "paths.txt", "".join(f"{display_name(n)}\n" for n in names))
        write_json(self.dir / "meta.json", self.meta)

    def link_into(self, run_features: Path, layers: Sequence[str]) -> dict[str, Path]:
        """Give the run directory its own ``features/<layer>.npy``: a hard link (no copy) when
        cache and run share a file system, else an atomic copy, so cleaning the cache never
        takes the run's features with it. Returns the run's paths by layer."""
        run_features.mkdir(parents=True, exist_ok=True)
        out = {}
        for layer in layers:
            src, dst = self.layer_path(layer), run_features / self.layer_path(layer).name
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            try:
                os.link(src, dst)
            except OSError as err:
                log.info("cannot hard-link %s into %s (%s): copying it", src, run_features, err.strerror)
                copy_file(src, dst)
            out[layer] = dst
        return out


class _LoudLock(FileLock):
    """A FileLock that says so when it has to wait for another run."""

    def __enter__(self) -> _LoudLock:
        try:
            self.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another run using the feature cache entry (%s)", self.lock_file)
            self.acquire()
        return self
