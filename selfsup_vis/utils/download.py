"""One place for downloads, checksums and the cache directory (checkpoints, model-vs-human).

Downloads are atomic (a ``.part`` file renamed into place), optionally sha256-checked, and
fail with a message that says where to put the file by hand when the machine is offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download that failed (offline, moved, or wrong checksum); says what to do instead."""


def cache_root(sub: str = "") -> Path:
    """``$SELFSUP_VIS_CACHE/<sub>``, default ``~/.cache/selfsup_vis/<sub>``."""
    env = os.environ.get("SELFSUP_VIS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "selfsup_vis"
    return base / sub if sub else base


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def download_file(
    url: str, dest: str | Path, sha256: str | None = None, timeout: float = 30.0, hint: str = ""
) -> Path:
    """Download ``url`` to ``dest`` atomically; skip when ``dest`` exists (and matches).

    ``sha256`` may be a prefix of the hex digest. ``hint`` is appended to the offline message.
    """
    dest = Path(dest)
    stale = ""
    if dest.is_file():
        got = sha256_of(dest) if sha256 is not None else None
        if sha256 is None or got.startswith(sha256.lower()):
            return dest
        stale = f" (the cached {dest} has sha256 {got}, expected {sha256})"
        log.warning("cached %s does not match its sha256; downloading it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            log.info("downloading %s -> %s", url, dest)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                raise DownloadError(
                    f"cannot download {url}: {reason}. This machine may be offline (or the file "
                    f"moved): download it elsewhere and put it at {dest}{hint}.{stale}"
                ) from e
        if sha256 is not None and not (got := sha256_of(tmp)).startswith(sha256.lower()):
            raise DownloadError(f"{url}: sha256 {got} does not match the expected {sha256}; "
                                f"not saved to {dest}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
