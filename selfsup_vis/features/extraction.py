"""Stream features of ``Trainer.predict`` to disk and merge per-rank shards by sample index.

Each rank appends the raw float32 rows of every layer (and the sample positions) to its own
files while predicting, so memory does not grow with the dataset. Rank zero then writes
``features/<layer>.npy`` (N, D) by sample position: the duplicates a DistributedSampler pads
with land on the same row, and a missing sample is an error rather than a silent hole.

Large subsets are extracted in chunks, each merged as soon as it is complete; a job stopped
part way (a Slurm time limit or preemption: the requeued job reuses its run directory) extracts
only the chunks it had not finished.

Chunks are reused only for exactly the work that produced them: ``<work_dir>/chunks/key.json``
records the full key (the feature cache's: checkpoint hash or init seed, image file identities,
preprocessing, pooling, dataset and subset; plus the layers and the chunk size). A rerun in the
same run directory under any other key (another checkpoint, a replaced image, another seed)
discards the old chunks with a log line naming what changed, so a cache entry is only ever
written from rows produced under its own key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from selfsup_vis.utils.io import atomic_path, copy_file, reserve_space, write_json

log = logging.getLogger(__name__)


def layer_file_name(layer: str) -> str:
    return layer.replace("/", "_").replace("+", "plus")


class FeatureShardWriter(BasePredictionWriter):
    """Append each batch's features to ``<work_dir>/shards/rank<r>/<layer>.f32`` (+ ``positions.i64``).

    ``indices`` are the dataset indices being predicted; a sample's row in the final array is
    its position among them. Given to the Trainer through ``callbacks=``.
    """

    def __init__(self, work_dir: str | Path, indices: Sequence[int]) -> None:
        super().__init__(write_interval="batch")
        self.work_dir = Path(work_dir)
        self.shard_dir = self.work_dir / "shards"
        self.indices = np.asarray(indices, dtype=np.int64)
        self.start(self.indices)

    def start(self, indices: np.ndarray) -> None:
        """Predict ``indices`` next (one chunk of the subset): rows are positions among them."""
        self.positions = {int(i): p for p, i in enumerate(indices)}
        self.dims: dict[str, int] = {}

    def _rank_dir(self, trainer: pl.Trainer) -> Path:
        d = self.shard_dir / f"rank{trainer.global_rank}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        d = self._rank_dir(trainer)
        for f in d.iterdir():
            f.unlink()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        d = self._rank_dir(trainer)
        index = prediction["index"].detach().cpu().numpy().astype(np.int64)
        rows = np.array([self.positions[int(i)] for i in index], dtype=np.int64)
        for layer, feats in prediction["features"].items():
            arr = feats.detach().float().cpu().numpy().astype(np.float32, copy=False)
            self.dims.setdefault(layer, arr.shape[1])
            with open(d / f"{layer_file_name(layer)}.f32", "ab") as f:
                f.write(np.ascontiguousarray(arr).tobytes())
        with open(d / "positions.i64", "ab") as f:
            f.write(rows.tobytes())

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        (self._rank_dir(trainer) / "dims.json").write_text(json.dumps(self.dims))


def merge_shards(shard_dir: Path, out_dir: Path, layers: Sequence[str], n: int) -> dict[str, Path]:
    """Merge every rank's shards into ``out_dir/<layer>.npy`` (N, D) float32, by position."""
    ranks = sorted(p for p in Path(shard_dir).glob("rank*") if (p / "positions.i64").exists())
    if not ranks:
        raise RuntimeError(f"no feature shards in {shard_dir}")
    dims: dict[str, int] = {}
    for r in ranks:
        dims.update(json.loads((r / "dims.json").read_text()))
    seen = np.zeros(n, dtype=bool)
    for r in ranks:
        seen[np.fromfile(r / "positions.i64", dtype=np.int64)] = True
    if not seen.all():
        missing = np.flatnonzero(~seen)
        raise RuntimeError(f"feature extraction lost {missing.size} of {n} samples (first: {missing[:5].tolist()})")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for layer in layers:
        name = layer_file_name(layer)
        path = out_dir / f"{name}.npy"
        with atomic_path(path) as tmp:
            merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dims[layer]))
            reserve_space(tmp)  # disk full: ENOSPC naming the path, not SIGBUS in the mmap
            for r in ranks:
                pos = np.fromfile(r / "positions.i64", dtype=np.int64)
                rows = np.memmap(r / f"{name}.f32", dtype=np.float32, mode="r").reshape(len(pos), dims[layer])
                merged[pos] = rows
            merged.flush()
            del merged
        paths[layer] = path
    return paths


#: samples per chunk: at most this much work is redone when a stopped job is restarted
CHUNK_SIZE = 20_000


def chunk_key(key: Mapping[str, Any] | None, layers: Sequence[str], indices: np.ndarray,
              chunk: int) -> dict[str, Any]:
    """What a chunk of this extraction depends on, as stored in ``chunks/key.json``."""
    return json.loads(json.dumps({
        "features": dict(key or {}),
        "layers": list(layers),
        "chunk_size": int(chunk),
        "indices_sha256": hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest(),
    }, sort_keys=True, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The (dotted) fields in which two keys differ, for the log line that discards chunks."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "key"]


def _reusable_chunks(chunks: Path, want: dict[str, Any], count: int) -> set[int]:
    """The completed chunks under ``chunks`` produced under exactly ``want``; anything else
    there is stale (logged with the reason; rank zero removes it before writing)."""
    if not chunks.is_dir():
        return set()
    try:
        have = json.loads((chunks / "key.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have != want:
        why = ("no key recorded" if have is None
               else "changed: " + ", ".join(_differences(have, want)[:8]))
        log.warning("discarding the partly extracted features in %s: they were produced under "
                    "another key (%s)", chunks, why)
        return set()
    return {k for k in range(count) if (chunks / f"{k:05d}" / "complete").is_file()}


class LayerPredictor(pl.LightningModule):
    """``model`` predicting ``layers`` (validated by the model), leaving the model's own
    ``predict_layers`` as its owner built them."""

    def __init__(self, model: pl.LightningModule, layers: Sequence[str]) -> None:
        super().__init__()
        for layer in layers:
            model.parse_layer(layer)
        self.model, self.layers = model, list(layers)

    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        return self.model.predict_features(batch, self.layers)


def extract_features(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: Any,
    writer: FeatureShardWriter,
    layers: Sequence[str],
    out_dir: Path,
    chunk_size: int | None = None,
    key: Mapping[str, Any] | None = None,
) -> dict[str, Path] | None:
    """Run ``trainer.predict`` (whose callbacks include ``writer``) over ``writer.indices`` of
    the datamodule's eval split, ``chunk_size`` (default :data:`CHUNK_SIZE`) samples at a time;
    each complete chunk is merged into ``<work_dir>/chunks/<k>/`` and skipped when the same
    extraction (same ``key``: the feature cache's meta, plus layers, samples and chunking) runs
    again in the same work dir. Rank zero concatenates the chunks into ``out_dir`` and returns
    the paths (other ranks return None)."""
    if writer not in trainer.callbacks:
        raise ValueError("extract_features: pass the FeatureShardWriter to the Trainer (callbacks=)")
    chunk_size = CHUNK_SIZE if chunk_size is None else chunk_size
    if chunk_size < 1:
        raise ValueError(f"extract_features: chunk_size must be >= 1, got {chunk_size}")
    predictor = LayerPredictor(model, layers)  # the layers still missing from the cache
    indices, n = writer.indices, len(writer.indices)
    chunks = writer.work_dir / "chunks"
    want = chunk_key(key, layers, indices, chunk_size)
    starts = list(range(0, n, chunk_size))
    # read by every rank before any rank writes a new chunk (each predict ends with a barrier)
    done = _reusable_chunks(chunks, want, len(starts))
    if done:
        log.info("resuming feature extraction: %d of %d chunks already extracted in %s",
                 len(done), len(starts), chunks)
    if trainer.is_global_zero:
        for stale in writer.work_dir.glob("chunks_*"):  # an older version's unkeyed chunks
            shutil.rmtree(stale, ignore_errors=True)
        if not done:
            shutil.rmtree(chunks, ignore_errors=True)
            chunks.mkdir(parents=True, exist_ok=True)
            write_json(chunks / "key.json", want)
    for k, start in enumerate(starts):
        if k in done:
            continue
        part = indices[start : start + chunk_size]
        writer.start(part)
        datamodule.configure(eval=datamodule.eval_pipeline, predict_indices=part)
        trainer.predict(predictor, datamodule=datamodule, return_predictions=False)
        trainer.strategy.barrier("features-written")
        if trainer.is_global_zero:
            merge_shards(writer.shard_dir, chunks / f"{k:05d}", layers, len(part))
            (chunks / f"{k:05d}" / "complete").touch()
        trainer.strategy.barrier("chunk-merged")  # no rank clears its shards before the merge
    if not trainer.is_global_zero:
        return None
    paths = _concatenate(chunks, len(starts), layers, n, Path(out_dir))
    shutil.rmtree(writer.work_dir, ignore_errors=True)
    return paths


def _concatenate(chunks: Path, count: int, layers: Sequence[str], n: int, out_dir: Path) -> dict[str, Path]:
    """``out_dir/<layer>.npy`` (N, D) from the chunks in order (a plain move for one chunk)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for layer in layers:
        name = f"{layer_file_name(layer)}.npy"
        parts = [np.load(chunks / f"{k:05d}" / name, mmap_mode="r") for k in range(count)]
        path = out_dir / name
        if count == 1:  # the common case: the one chunk is the result
            del parts
            copy_file(chunks / "00000" / name, path)
        else:
            with atomic_path(path) as tmp:
                merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, parts[0].shape[1]))
                reserve_space(tmp)
                row = 0
                for part in parts:
                    merged[row : row + len(part)] = part
                    row += len(part)
                merged.flush()
                del merged
        paths[layer] = path
    return paths
