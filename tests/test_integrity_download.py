"""Downloads against a real HTTP server on 127.0.0.1 (started and stopped here): a cut
connection, an HTML error page, two URLs with one file name, checksums, resume, offline,
a full disk, concurrent callers."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from selfsup_vis.checkpoints.loading import CheckpointError, resolve_checkpoint, safe_load
from selfsup_vis.utils.download import download_file, url_cache_path
from tests.conftest import LocalHTTPServer
from tests.conftest import checkpoint_bytes as _checkpoint_bytes

pytestmark = pytest.mark.usefixtures("download_cache")


class _Server(LocalHTTPServer):
    """Routes path -> (bytes, content type); ``cut`` paths send half of the body once (or
    always) and drop the connection; Range is honoured on ``resumable`` paths."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.cut_always: set[str] = set()
        self.cut_once: set[str] = set()
        self.resumable: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    body = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
                    self.send_response(404)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data, ctype = server.files[path]
                start = 0
                rng = self.headers.get("Range")
                if rng and path in server.resumable:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if path in server.resumable:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.cut_always or path in server.cut_once:
                    server.cut_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.parent.name != "locks")


def test_cut_connection_is_refused_and_leaves_nothing(server, tmp_path):
    data = _checkpoint_bytes(1.0)
    server.files["/cut/model.pth"] = (data, "application/octet-stream")
    server.cut_always.add("/cut/model.pth")
    with pytest.raises(CheckpointError, match=r"connection closed after \d+ of \d+ bytes.*3 attempts"):
        resolve_checkpoint(server.url("/cut/model.pth"))
    assert len(server.requests) == 3  # two polite retries
    assert _leftovers(tmp_path / "cache") == []  # neither model.pth nor a .part file


def test_cut_connection_is_resumed_with_range(server, tmp_path):
    data = _checkpoint_bytes(2.0)
    server.files["/r/model.pth"] = (data, "application/octet-stream")
    server.cut_once.add("/r/model.pth")
    server.resumable.add("/r/model.pth")
    path = resolve_checkpoint(server.url("/r/model.pth"))
    assert path.read_bytes() == data
    assert server.requests[1][1] == f"bytes={len(data) // 2}-"  # resumed, not restarted
    assert torch.equal(safe_load(path)["w"], torch.full((20_000,), 2.0))


def test_html_error_page_is_refused_with_what_came_back(server, tmp_path):
    server.files["/html/model.pth"] = (b"<!DOCTYPE html><html><body>Please log in</body></html>",
                                       "text/html; charset=utf-8")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(server.url("/html/model.pth"))
    msg = str(err.value)
    assert "HTML page" in msg and "text/html" in msg and "Please log in" in msg
    assert _leftovers(tmp_path / "cache") == []
    # a 404 answered with HTML says so too
    with pytest.raises(CheckpointError, match=r"HTTP 404.*HTML page.*404 Not Found"):
        resolve_checkpoint(server.url("/missing/model.pth"))


def test_non_checkpoint_bytes_are_refused(server, tmp_path):
    server.files["/bin/model.pth"] = (b"\x00\x01garbage" * 100, "application/octet-stream")
    with pytest.raises(CheckpointError, match=r"not a PyTorch checkpoint.*garbage"):
        resolve_checkpoint(server.url("/bin/model.pth"))


def test_two_urls_with_one_file_name_do_not_share_a_cache_entry(server):
    a, b = _checkpoint_bytes(1.0), _checkpoint_bytes(5.0)
    server.files["/a/model.pth"] = (a, "application/octet-stream")
    server.files["/b/model.pth"] = (b, "application/octet-stream")
    pa = resolve_checkpoint(server.url("/a/model.pth"))
    pb = resolve_checkpoint(server.url("/b/model.pth"))
    assert pa != pb and pa.name == pb.name == "model.pth"  # readable name, keyed by the URL
    assert safe_load(pb)["w"][0].item() == 5.0 and safe_load(pa)["w"][0].item() == 1.0
    n = len(server.requests)
    assert resolve_checkpoint(server.url("/a/model.pth")) == pa and len(server.requests) == n  # cached


def test_sha256_from_url_fragment_and_hub_file_name(server, tmp_path):
    data = _checkpoint_bytes(3.0)
    digest = hashlib.sha256(data).hexdigest()
    server.files["/s/model.pth"] = (data, "application/octet-stream")
    assert resolve_checkpoint(server.url(f"/s/model.pth#sha256={digest}")).read_bytes() == data
    server.files["/s3/model.pth"] = (data, "application/octet-stream")
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match 0000000000.*#sha256="):
        resolve_checkpoint(server.url("/s3/model.pth#sha256=" + "0" * 64))
    # torch-hub / OpenMMLab names carry a sha256 prefix: checked
    server.files[f"/h/mae-{digest[:8]}.pth"] = (data, "application/octet-stream")
    assert resolve_checkpoint(server.url(f"/h/mae-{digest[:8]}.pth")).read_bytes() == data
    server.files["/h/mae-deadbeef.pth"] = (data, "application/octet-stream")
    with pytest.raises(CheckpointError, match=r"does not match deadbeef .*file name's hash suffix"):
        resolve_checkpoint(server.url("/h/mae-deadbeef.pth"))
    assert not (url_cache_path(server.url("/h/mae-deadbeef.pth"), tmp_path / "cache" / "checkpoints")).exists()


def test_offline_error_says_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CheckpointError, match=r"offline.*put it at .*model\.pth.*model\.checkpoint=<local path>"):
        resolve_checkpoint(f"http://127.0.0.1:{port}/x/model.pth")


def test_disk_full_during_download_names_the_path_and_leaves_nothing(server, tmp_path, monkeypatch):
    server.files["/f/model.pth"] = (_checkpoint_bytes(4.0), "application/octet-stream")
    real_open = open

    class FullFile(io.FileIO):
        def write(self, b):  # the disk fills up on the first write
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(file, mode="r", *args, **kwargs):
        if ("w" in mode or "a" in mode) and str(file).endswith(".part"):
            return FullFile(file, mode.replace("b", ""))
        return real_open(file, mode, *args, **kwargs)

    import selfsup_vis.utils.download as dl

    monkeypatch.setattr(dl, "open", fake_open, raising=False)
    dest = tmp_path / "dl" / "model.pth"
    with pytest.raises(OSError, match=r"No space left on device while downloading into .*dl/model\.pth") as err:
        download_file(server.url("/f/model.pth"), dest)
    assert err.value.errno == errno.ENOSPC
    assert _leftovers(tmp_path / "dl") == []


def test_concurrent_downloads_of_one_file_fetch_it_once(server, tmp_path):
    data = _checkpoint_bytes(6.0, n=200_000)
    server.files["/c/model.pth"] = (data, "application/octet-stream")
    dest = tmp_path / "dl" / "model.pth"
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(download_file(server.url("/c/model.pth"), dest).read_bytes())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results == [data] * 3
    assert len(server.requests) == 1  # the others waited on the lock and reused the file
