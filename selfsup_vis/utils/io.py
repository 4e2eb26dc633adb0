"""Atomic file writing: outputs are either complete or absent, never half-written.

A write that fails (disk full, quota, read-only file system) removes its temporary file and
raises an ``OSError`` whose message names the final path, so "No space left on device" says
where; text is always written as UTF-8 whatever the locale.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: errnos that mean "the storage is full / not writable": re-raised naming the path.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def storage_error(err: OSError, path: str | os.PathLike, what: str = "writing") -> OSError:
    """``err`` re-worded to name ``path`` (same errno and type, so handlers still match)."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    hint = " (free some space, or point the cache/output elsewhere)" if err.errno in (
        errno.ENOSPC, errno.EDQUOT) else ""
    new = type(err)(err.errno, f"{reason} while {what} {path}{hint}")
    new.filename = str(path)
    return new


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in STORAGE_ERRNOS:
            raise storage_error(err, path.parent, "creating") from err
        raise
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"output directory is not writable: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any written file
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as err:
            if err.errno in STORAGE_ERRNOS:
                raise storage_error(err, path) from err
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (un-encodable surrogates from odd file names are escaped)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically; NaN is kept as JSON ``NaN`` (Python's json reads it back)."""
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV (UTF-8, ``header`` then ``rows``) written atomically."""
    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    return write_with(path, _write)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write_with(path, _write)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` onto ``dst`` atomically (used where a hard link is impossible)."""
    return write_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate a (sparse, memory-mapped) file's blocks now: a full disk is then an ``ENOSPC``
    here rather than a SIGBUS when the mapped pages are written."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # file system without fallocate
            return
        raise
    finally:
        os.close(fd)
