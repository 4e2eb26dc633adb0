"""One place for downloads, checksums and the cache directory (checkpoints, model-vs-human).

A download can be wrong in quiet ways: cut half way, an HTML error page saved as the file,
or a second URL with the same file name answered from the first one's cache. Hence:

* the cache path is keyed by the full URL (``<root>/<12 hex of sha256(url)>/<file name>``,
  :func:`url_cache_path`), so two URLs never share an entry and the name stays readable;
* bytes go to a temporary ``.part`` file next to the destination and are renamed into place
  only when complete: the ``Content-Length`` is checked, a cut connection is retried (resumed
  with an HTTP ``Range`` request when the server supports it, else restarted) and a failure
  leaves neither a partial file under the final name nor a temporary file;
* what came back is sniffed (:func:`describe_content`): an HTML page where a file was
  expected is refused with its content type and first bytes; callers can add a stricter
  check (``validate``, e.g. "is this a checkpoint");
* a server that sends no ``Content-Length`` (chunked answers, some proxies) gives no way to
  see a cut connection from the byte count: the file is then checked by its checksum when
  one is known, else by its own structure (:func:`structure_problem`: zip central
  directory, pickle STOP, safetensors header against the size, gzip/PNG/npy ends) before it
  is cached, and refused (naming URL and cache path) when neither is possible. A cached file
  without a checksum is re-checked by structure when reused, so a truncated file cached by
  an older version is fetched again instead of being used for ever;
* a sha256 is honoured when given (argument, ``#sha256=<hex>`` on the URL, or the
  torch-hub / OpenMMLab convention ``<name>-<8+ hex>.pth`` whose suffix is a sha256 prefix);
* a file lock (``<cache root>/locks/``) makes concurrent runs wait for one download;
* offline, the error says where to put the file by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import pickletools
import re
import struct
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from selfsup_vis.utils.io import STORAGE_ERRNOS, storage_error

log = logging.getLogger(__name__)

_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_FRAGMENT_SHA = re.compile(r"^sha256=([0-9a-fA-F]{8,64})$")
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed (offline, moved, cut, wrong content or checksum); says what to do."""


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


# ---------------------------------------------------------------------------------------------
# URLs: checksum hints, file names, cache paths
# ---------------------------------------------------------------------------------------------
def split_url(url: str) -> tuple[str, str | None]:
    """``(url without fragment, sha256 from a '#sha256=<hex>' fragment or None)``."""
    base, _, fragment = url.partition("#")
    match = _FRAGMENT_SHA.match(fragment)
    return base, match[1].lower() if match else None


def url_file_name(url: str, default: str = "download") -> str:
    """The readable file name of ``url`` (last path segment, percent-decoded, made safe)."""
    path = urllib.parse.urlsplit(split_url(url)[0]).path
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or default


def expected_sha256(url: str, sha256: str | None = None) -> tuple[str | None, str]:
    """The digest (or prefix) to check and where it came from: the argument, the URL's
    ``#sha256=`` fragment, or a torch-hub style ``-<hex>.`` suffix of the file name."""
    if sha256:
        return sha256.lower(), "the given sha256"
    fragment = split_url(url)[1]
    if fragment:
        return fragment, "the URL's #sha256="
    hub = _HUB_HASH.search(url_file_name(url))
    if hub:
        return hub[1], f"the file name's hash suffix -{hub[1]} (torch-hub/OpenMMLab convention)"
    return None, ""


def url_cache_path(url: str, root: str | Path, default_name: str = "download") -> Path:
    """``<root>/<12 hex of sha256(url)>/<file name>``: keyed by the full URL, name readable."""
    key = hashlib.sha256(split_url(url)[0].encode()).hexdigest()[:12]
    return Path(root) / key / url_file_name(url, default_name)


# ---------------------------------------------------------------------------------------------
# What is this file?
# ---------------------------------------------------------------------------------------------
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip archive (the PyTorch >= 1.6 checkpoint format is a zip)"),
    (b"PK\x05\x06", "empty zip archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"%PDF", "PDF document"),
    (b"\x93NUMPY", "NumPy .npy array"),
    (b"\x89HDF", "HDF5 file"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ", "xz data"),
)


def read_head(path: str | Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def describe_content(head: bytes, content_type: str | None = None) -> str:
    """A short human description of data starting with ``head`` (what a file really is)."""
    if not head:
        return "an empty file (0 bytes)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]}; legacy PyTorch checkpoints are pickles)"
    if len(head) > 9 and head[8:10] in (b'{"', b"{'") and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
            content_type or "").lower().startswith("text/html"):
        return "an HTML page"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "XML/HTML text"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(c.isprintable() or c in "\r\n\t" for c in decoded):
        return "text" + (" (JSON?)" if text.startswith((b"{", b"[")) else "")
    return "unrecognised binary data"


def is_html(head: bytes, content_type: str | None = None) -> bool:
    return describe_content(head, content_type) in ("an HTML page", "XML/HTML text")


def show_head(head: bytes, n: int = 80) -> str:
    """The first bytes for an error message (``b'<!DOCTYPE html>...'``)."""
    return repr(head[:n]) + ("..." if len(head) > n else "")


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return f"a safetensors file of {size} bytes has no complete header length"
        n = struct.unpack("<Q", raw)[0]
        if 8 + n > size:
            return f"its safetensors header says {n} bytes, but the file has {size - 8} after the length"
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            return f"its safetensors header is not valid JSON ({e})"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    want = 8 + n + max(ends, default=0)
    if want != size:
        return f"its safetensors header describes {want} bytes, the file has {size}"
    return None


def _zip_problem(path: Path, size: int) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"it is not a complete zip archive ({e}; a cut download loses the central directory at the end)"
    for info in infos:
        if info.header_offset + info.compress_size > size:
            return f"zip member {info.filename} ends past the end of the file ({size} bytes)"
    return None


def _pickle_problem(path: Path, size: int) -> str | None:
    """Every pickle in the file parses to its STOP opcode (a legacy torch file is several
    pickles followed by raw storages: the pickles are checked, the storages cannot be)."""
    with open(path, "rb") as f:
        for _ in range(5):
            if f.tell() >= size or f.read(1) != b"\x80":
                break
            f.seek(-1, os.SEEK_CUR)
            try:
                for _op in pickletools.genops(f):
                    pass
            except (ValueError, EOFError) as e:
                return f"its pickle data ends early ({e})"
    return None


def _gzip_problem(path: Path, size: int) -> str | None:
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as e:
        return f"its gzip stream ends early or is corrupt ({e})"
    return None


def _png_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        f.seek(max(0, size - 12))
        if b"IEND" not in f.read():
            return "the PNG image has no IEND chunk at its end"
    return None


def _npy_problem(path: Path, size: int) -> str | None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        return f"its .npy header does not match the file size ({e})"
    del arr
    return None


_STRUCTURE: tuple[tuple[str, Callable[[Path, int], str | None]], ...] = (
    ("a safetensors file", _safetensors_problem),
    ("zip archive", _zip_problem),
    ("a pickle", _pickle_problem),
    ("gzip data", _gzip_problem),
    ("PNG image", _png_problem),
    ("NumPy .npy array", _npy_problem),
)


def structure_problem(path: str | Path) -> tuple[bool, str | None]:
    """``(checkable, problem)``: whether the file's format has a structure that shows a cut
    (zip, pickle, safetensors, gzip, PNG, npy), and what is wrong with it (None: complete)."""
    path = Path(path)
    size = path.stat().st_size
    kind = describe_content(read_head(path))
    for prefix, check in _STRUCTURE:
        if kind.startswith(prefix):
            return True, check(path, size)
    return False, None


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------
def _lock(dest: Path) -> FileLock:
    """A lock per destination, kept in ``<cache root>/locks`` so data folders stay clean."""
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:20]
    locks = cache_root("locks")
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{key}.lock"))


class _Incomplete(Exception):
    """The connection ended before ``Content-Length`` bytes arrived."""


def _fetch(url: str, tmp: Path, dest: Path, timeout: float, retries: int) -> tuple[str | None, bool]:
    """Stream ``url`` into ``tmp``; retry a cut connection (resuming with Range when the server
    answers 206). Returns the Content-Type and whether a Content-Length was given."""
    got, total, content_type, last_err = 0, None, None, None
    for attempt in range(retries + 1):
        headers = {"User-Agent": "selfsup_vis"}
        if got:
            headers["Range"] = f"bytes={got}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=timeout) as resp:
                if got and resp.status != 206:  # the server ignored Range: start over
                    log.info("%s: the server does not resume (status %s); restarting", url, resp.status)
                    got = 0
                length = resp.headers.get("Content-Length")
                if got == 0:
                    total = int(length) if length and length.isdigit() else None
                    content_type = resp.headers.get("Content-Type")
                try:
                    with open(tmp, "ab" if got else "wb") as out:
                        while True:
                            try:
                                chunk = resp.read(_CHUNK)
                            except http.client.IncompleteRead as e:
                                out.write(e.partial)
                                got += len(e.partial)
                                raise _Incomplete from e
                            if not chunk:
                                break
                            out.write(chunk)
                            got += len(chunk)
                except OSError as e:  # the disk, not the network: say which path
                    if e.errno in STORAGE_ERRNOS:
                        raise storage_error(e, dest, "downloading into") from e
                    raise
            if total is not None and got < total:
                raise _Incomplete
            if total is not None and got > total:
                raise DownloadError(f"{url}: received {got} bytes, more than its Content-Length "
                                    f"{total}; not saved to {dest}")
            return content_type, total is not None
        except urllib.error.HTTPError as e:
            if e.code in (408, 429) or e.code >= 500:
                last_err = f"HTTP {e.code} {e.reason}"
            else:
                body = e.read(200) if e.fp else b""
                raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason} (the server "
                                    f"answered {describe_content(body, e.headers.get('Content-Type'))}: "
                                    f"{show_head(body)}); not saved to {dest}") from e
        except _Incomplete:
            last_err = (f"connection closed after {got} of {total} bytes" if total is not None
                        else f"connection closed after {got} bytes")
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            if attempt == 0 and got == 0 and isinstance(e, urllib.error.URLError):
                raise DownloadError(f"cannot download {url}: {reason}") from e  # offline / DNS
            last_err = str(reason)
        if attempt < retries:
            log.warning("downloading %s: %s; retrying (%d/%d)%s", url, last_err, attempt + 1, retries,
                        f", resuming at byte {got}" if got else "")
            time.sleep(min(0.5 * 2 ** attempt, 5.0))
    raise DownloadError(f"cannot download {url}: {last_err} (after {retries + 1} attempts); "
                        f"not saved to {dest}")


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = 30.0,
    hint: str = "",
    retries: int = 2,
    validate: Callable[[Path, bytes, str | None], str | None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically; reuse ``dest`` when it exists (and matches).

    ``sha256`` may be a prefix of the hex digest; without it, a ``#sha256=`` fragment or a
    torch-hub style file name hash is checked (:func:`expected_sha256`). ``validate(path,
    first_bytes, content_type)`` returns a problem description to refuse the content. ``hint``
    is appended to the offline message. Concurrent callers wait on a file lock.
    """
    dest = Path(dest)
    want, want_from = expected_sha256(url, sha256)
    fetch_url = split_url(url)[0]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the download directory {dest.parent}: {e}") from e
    lock = _lock(dest)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process downloading %s", dest)
        lock.acquire()
    try:
        stale = ""
        if dest.is_file():
            if want is None:
                problem = structure_problem(dest)[1]
                if problem is None:
                    return dest
                log.warning("cached %s is incomplete (%s): deleting it and downloading %s again",
                            dest, problem, fetch_url)
                dest.unlink()
            else:
                got = sha256_of(dest)
                if got.startswith(want):
                    return dest
                stale = f" (the cached {dest} has sha256 {got}, expected {want} from {want_from})"
                log.warning("cached %s does not match its sha256; downloading it again", dest)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s -> %s", fetch_url, dest)
            try:
                content_type, sized = _fetch(fetch_url, tmp, dest, timeout, retries)
            except DownloadError as e:
                raise DownloadError(f"{e}. This machine may be offline (or the file moved): "
                                    f"download it elsewhere and put it at {dest}{hint}.{stale}") from e
            head = read_head(tmp)
            if is_html(head, content_type) and dest.suffix.lower() not in (".html", ".htm"):
                raise DownloadError(
                    f"{fetch_url} returned {describe_content(head, content_type)} (Content-Type "
                    f"{content_type or 'not given'}), not the file: {show_head(head)}. The link may "
                    f"need a login or have moved; not saved to {dest}")
            if validate is not None and (problem := validate(tmp, head, content_type)):
                raise DownloadError(f"{fetch_url}: {problem}; not saved to {dest}")
            if want is not None and not (digest := sha256_of(tmp)).startswith(want):
                raise DownloadError(f"{fetch_url}: sha256 {digest} does not match {want} "
                                    f"(from {want_from}); not saved to {dest}")
            if want is None:
                checkable, problem = structure_problem(tmp)
                if problem:
                    raise DownloadError(
                        f"{fetch_url}: the download is incomplete or corrupt: {problem} "
                        f"({tmp.stat().st_size} bytes{'' if sized else ', the server sent no Content-Length'}); "
                        f"the partial file was deleted, not saved to {dest}")
                if not sized and not checkable:
                    raise DownloadError(
                        f"{fetch_url}: the server sent no Content-Length, no sha256 is known and "
                        f"{describe_content(head, content_type)} has no structure that shows a cut "
                        f"download; not saved to {dest}. Give the sha256 (append #sha256=<hex> to "
                        f"the URL) or download it by hand and put it at {dest}")
            try:
                os.replace(tmp, dest)
            except OSError as e:
                raise storage_error(e, dest, "saving") from e
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        lock.release()
    return dest
