"""Features the user already has: one ``.npy`` file or a folder of ``.npy`` shards, plus labels.

Nothing here loads the features whole. :class:`FeatureShards` reads the header of every file,
checks shapes and dtypes before any work starts, and hands out row ranges or row subsets as
float32 copies of just those rows (each read maps only the bytes it needs and unmaps them
again, so the process does not keep gigabytes of file pages resident). The embedding code
treats it like an ``(N, D)`` array: ``shape``, ``len`` and ``x[a:b]`` / ``x[indices]``.

Labels come from a ``.npy`` (integers, or strings that become class names) or a CSV with a
header holding ``label`` and/or ``class`` (and optionally ``path``) columns.

Every file is checked from its header before anything is mapped: a truncated shard (the header
promises more bytes than the file has), Python objects in a ``.npy``, float64 values beyond the
float32 range, label ids that are negative or above :data:`MAX_CLASSES` (one stray 2**40 would
otherwise allocate a class list without bound) and an empty CSV are refused naming the file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLOAT_KINDS = ("f",)  # float16 / float32 / float64
#: label ids above this are refused: no embedding has a million classes, a stray value does
MAX_CLASSES = 1_000_000


@dataclass(frozen=True)
class Shard:
    path: Path
    offset: int  # byte offset of the data after the .npy header
    rows: int
    dtype: np.dtype


def _natural_key(p: Path) -> list:
    """``shard_2.npy`` before ``shard_10.npy``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _read_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as err:
            raise ValueError(f"{path}: not a .npy file ({err})") from err
        try:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as err:
            raise ValueError(f"{path}: unreadable .npy header ({err})") from err
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path} holds Python objects (dtype {dtype}), which are never unpickled; "
                         "save plain numbers or strings (np.save(path, np.asarray(x, dtype=np.int64)))")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise ValueError(f"{path} is truncated: its header says shape {tuple(shape)} {dtype} "
                         f"({need} bytes with the header) but the file has {size} bytes; an "
                         "interrupted copy or write? Write it again")
    return shape, fortran, dtype, offset


def _check_float32_range(shard: Shard, dim: int) -> None:
    """float64 values beyond float32's range would become inf when read: refuse them."""
    limit = float(np.finfo(np.float32).max)
    step = max(1, (64 << 20) // max(1, dim * shard.dtype.itemsize))
    for lo in range(0, shard.rows, step):
        hi = min(shard.rows, lo + step)
        mm = np.memmap(shard.path, dtype=shard.dtype, mode="r",
                       offset=shard.offset + lo * dim * shard.dtype.itemsize, shape=(hi - lo, dim))
        big = np.abs(mm) > limit
        if big.any():
            row, col = np.argwhere(big)[0]
            value = float(mm[row, col])
            del mm
            raise ValueError(f"task.features: {shard.path} row {lo + int(row)} column {int(col)} holds "
                             f"{value:g}, beyond the float32 range (±{limit:.3g}) features are read in; "
                             "rescale the features")
        del mm


class FeatureShards:
    """An (N, D) feature matrix stored in one or more ``.npy`` files, read by rows on demand."""

    def __init__(self, source: str | Path) -> None:
        src = Path(source).expanduser()
        if src.is_dir():
            files = sorted(src.glob("*.npy"), key=_natural_key)
            if not files:
                raise FileNotFoundError(f"task.features: no .npy files in the folder {src}")
        elif src.is_file():
            files = [src]
        else:
            raise FileNotFoundError(f"task.features: {src} does not exist (a .npy file or a folder of .npy shards)")
        self.source = src
        shards, dim = [], None
        for path in files:
            try:
                shape, fortran, dtype, offset = _read_header(path)
            except ValueError as err:
                raise ValueError(f"task.features: {err}") from None
            if len(shape) != 2:
                raise ValueError(
                    f"task.features: {path} has shape {shape}; every features file must be 2-D (N, D)"
                    + (" — labels belong in task.labels, not in the features folder" if len(shape) == 1 else "")
                )
            if dtype.kind not in FLOAT_KINDS:
                raise ValueError(
                    f"task.features: {path} holds {dtype} values; features must be float16/32/64 "
                    "(cast them with .astype(np.float32) before saving)"
                )
            if fortran and shape[0] > 1 and shape[1] > 1:
                raise ValueError(
                    f"task.features: {path} is stored in Fortran order; rows cannot be streamed — "
                    "save it with np.save(path, np.ascontiguousarray(x))"
                )
            if dim is not None and shape[1] != dim:
                raise ValueError(
                    f"task.features: {path} has {shape[1]} columns but {shards[0].path} has {dim}; "
                    "all shards must have the same feature dimension"
                )
            dim = shape[1]
            if shape[0] == 0:
                continue
            shards.append(Shard(path, offset, int(shape[0]), dtype))
            if dtype.itemsize > 4:
                _check_float32_range(shards[-1], int(dim))
        if not shards:
            raise ValueError(f"task.features: {src} holds no rows")
        self.shards = shards
        self.dim = int(dim)
        self.starts = np.cumsum([0] + [s.rows for s in shards])
        self.shape = (int(self.starts[-1]), self.dim)
        self.dtype = np.dtype(np.float32)  # what reads return
        self.ndim = 2
        self.nbytes_on_disk = int(sum(s.rows * self.dim * s.dtype.itemsize for s in shards))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FeatureShards({self.source}, shape={self.shape}, shards={len(self.shards)})"

    def _map(self, shard: Shard, lo: int, hi: int) -> np.memmap:
        row = self.dim * shard.dtype.itemsize
        return np.memmap(shard.path, dtype=shard.dtype, mode="r", offset=shard.offset + lo * row,
                         shape=(hi - lo, self.dim))

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new float32 array (maps only those bytes)."""
        start, stop = max(0, start), min(stop, len(self))
        out = np.empty((max(0, stop - start), self.dim), dtype=np.float32)
        for i, shard in enumerate(self.shards):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            if lo >= hi:
                continue
            mm = self._map(shard, int(lo - self.starts[i]), int(hi - self.starts[i]))
            out[lo - start : hi - start] = mm
            del mm
        return out

    def take(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (any order) as a new float32 array."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row indices out of range for {len(self)} rows")
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        for i in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == i)
            local = idx[sel] - self.starts[i]
            lo, hi = int(local.min()), int(local.max()) + 1
            mm = self._map(self.shards[i], lo, hi)
            out[sel] = mm[local - lo]
            del mm
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return self.rows(start, stop)
        if isinstance(key, int | np.integer):
            return self.rows(int(key), int(key) + 1)[0]
        return self.take(np.asarray(key))

    def locate(self, rows: np.ndarray) -> str:
        """Name the files (and rows within them) of global ``rows``, for error messages."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        parts = []
        for i in np.unique(shard_of)[:3]:
            local = rows[shard_of == i] - self.starts[i]
            parts.append(f"{self.shards[i].path} rows {local[:5].tolist()}")
        return "; ".join(parts)

    def load(self) -> np.ndarray:
        """All rows as one float32 array — for small N only (the in-memory embedding path)."""
        return self.rows(0, len(self))


@dataclass
class ExternalLabels:
    labels: np.ndarray  # (N,) int64 class ids 0..K-1
    classes: list[str]
    paths: list[str] | None
    source: Path | None


def _classes_from_names(names: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[n] for n in names], dtype=np.int64), classes


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    """(labels or class names, class names per row, paths) from a CSV with a header."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "label" not in cols and "class" not in cols:
            raise ValueError(
                f"task.labels: {path} needs a header with a 'label' (integer) and/or 'class' (name) "
                f"column; found columns {cols}"
            )
        reader.fieldnames = cols
        label_col, class_col, path_col = [], [], []
        for line, row in enumerate(reader, start=2):
            if "label" in cols:
                try:
                    label_col.append(int(row["label"]))
                except (TypeError, ValueError):
                    raise ValueError(f"task.labels: {path} line {line}: label {row['label']!r} is not an integer") from None
                if not 0 <= label_col[-1] <= MAX_CLASSES:
                    raise ValueError(f"task.labels: {path} line {line}: label {label_col[-1]} is "
                                     f"{'negative' if label_col[-1] < 0 else f'above {MAX_CLASSES}'}; "
                                     "label ids are class indices 0..K-1")
            if "class" in cols:
                class_col.append(str(row["class"]))
            if "path" in cols:
                path_col.append(str(row["path"]))
    if not (label_col or class_col):
        raise ValueError(f"task.labels: {path} has a header ({', '.join(cols)}) but no rows")
    labels = np.array(label_col, dtype=np.int64) if label_col else None
    return labels, class_col or None, path_col or None


def load_labels(path: str | Path | None, n: int, *, classes: list[str] | str | Path | None = None,
                paths: str | Path | None = None) -> ExternalLabels:
    """Labels for ``n`` feature rows from a ``.npy`` or CSV (or none: one class "all").

    ``classes``: names by label id (a list or a text file, one per line); ``paths``: a text
    file with one sample path per line. Every length is checked against ``n``.
    """
    src = Path(path).expanduser() if path else None
    row_paths: list[str] | None = None
    if src is None:
        labels, names = np.zeros(n, dtype=np.int64), ["all"]
    elif not src.is_file():
        raise FileNotFoundError(f"task.labels: {src} does not exist")
    elif src.suffix == ".npy":
        try:
            _read_header(src)  # objects, truncation: refused before mapping
        except ValueError as err:
            raise ValueError(f"task.labels: {err}") from None
        arr = np.load(src, mmap_mode="r", allow_pickle=False)
        if arr.ndim != 1:
            raise ValueError(f"task.labels: {src} has shape {arr.shape}; labels must be 1-D (N,)")
        if arr.dtype.kind in "iu":
            labels, names = np.asarray(arr, dtype=np.int64), None
        elif arr.dtype.kind in "US":
            labels, names = _classes_from_names([str(v) for v in arr])
        else:
            raise ValueError(f"task.labels: {src} holds {arr.dtype}; labels must be integers or strings")
    elif src.suffix.lower() in (".csv", ".tsv", ".txt"):
        labels, class_col, row_paths = _read_csv(src)
        names = None
        if labels is None:
            labels, names = _classes_from_names(class_col)
        elif class_col is not None:
            pairs = dict(zip(labels.tolist(), class_col))
            conflict = [(lab, c) for lab, c in zip(labels.tolist(), class_col) if pairs[lab] != c]
            if conflict:
                raise ValueError(f"task.labels: {src}: label {conflict[0][0]} is named both "
                                 f"{pairs[conflict[0][0]]!r} and {conflict[0][1]!r}")
            names = [pairs.get(i, str(i)) for i in range(int(labels.max()) + 1)] if labels.size else []
    else:
        raise ValueError(f"task.labels: {src} must be a .npy or a .csv file")
    if labels.shape[0] != n:
        raise ValueError(f"task.labels: {src} has {labels.shape[0]} labels but the features have {n} rows")
    if labels.size and labels.min() < 0:
        bad = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(f"task.labels: {src} holds negative labels ({int(labels[bad])} at row {bad})")
    if labels.size and labels.max() > MAX_CLASSES:
        bad = int(np.flatnonzero(labels > MAX_CLASSES)[0])
        raise ValueError(f"task.labels: {src} row {bad} holds label {int(labels[bad])}, above "
                         f"{MAX_CLASSES}: label ids are class indices 0..K-1 (a stray value?)")
    if classes is not None and src is None:
        raise ValueError("task.classes is set but task.labels is not: class names need the labels they name")
    if classes is not None:
        given = ([ln.strip() for ln in Path(classes).read_text().splitlines() if ln.strip()]
                 if isinstance(classes, str | Path) else [str(c) for c in classes])
        if labels.size and int(labels.max()) >= len(given):
            raise ValueError(f"task.classes: {len(given)} names but labels go up to {int(labels.max())} "
                             f"(in {src})")
        names = given
    if names is None:
        names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    if paths is not None:
        p = Path(paths).expanduser()
        row_paths = [ln.rstrip("\n") for ln in p.read_text().splitlines()]
        if len(row_paths) != n:
            raise ValueError(f"task.paths: {p} has {len(row_paths)} lines but the features have {n} rows")
    elif row_paths is not None and len(row_paths) != n:
        raise ValueError(f"task.labels: {src} has {len(row_paths)} paths but the features have {n} rows")
    return ExternalLabels(labels=labels, classes=names, paths=row_paths, source=src)
