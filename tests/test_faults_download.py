"""Downloads from a server that sends no Content-Length (issue 24 item 7), against a real
http.server on 127.0.0.1 started and stopped here: a cut answer is verified by checksum when
known, else by the file's structure, and never cached; the error names URL and cache path."""

from __future__ import annotations

import hashlib
import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from selfsup_vis.checkpoints.loading import CheckpointError, resolve_checkpoint, safe_load
from selfsup_vis.utils.download import DownloadError, download_file, url_cache_path
from tests.conftest import LocalHTTPServer, checkpoint_bytes

pytestmark = pytest.mark.usefixtures("download_cache")


class _NoLengthServer(LocalHTTPServer):
    """Answers ``files[path]`` without Content-Length (HTTP/1.0 style: the body ends when the
    connection closes); ``cut[path]`` is how many bytes to send before closing."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                data = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(data[: server.cut.get(self.path, len(data))])

        super().__init__(Handler)


@pytest.fixture
def server() -> Iterator[_NoLengthServer]:
    with _NoLengthServer() as s:
        yield s


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "locks"]


def _zip_checkpoint(value: float) -> bytes:
    return checkpoint_bytes(value, n=50_000)


@pytest.mark.parametrize("kind", ["zip", "safetensors"])
def test_cut_download_without_content_length_is_refused_by_structure(server, tmp_path, kind):
    data = _zip_checkpoint(1.0) if kind == "zip" else save_safetensors({"w": torch.full((50_000,), 1.0)})
    path = f"/{kind}/model.pth"
    server.files[path] = data
    server.cut[path] = len(data) * 2 // 3
    dest = url_cache_path(server.url(path), tmp_path / "cache" / "checkpoints", "checkpoint.pth")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(server.url(path))
    msg = str(err.value)
    assert "incomplete" in msg and "no Content-Length" in msg
    assert server.url(path) in msg and str(dest) in msg  # which URL, which cache path
    assert _files(tmp_path / "cache") == []  # the partial file is gone, nothing cached

    # the server is asked again next time, and the complete file is cached and loads
    del server.cut[path]
    got = resolve_checkpoint(server.url(path))
    assert got == dest and got.read_bytes() == data
    assert torch.equal(safe_load(got)["w"], torch.full((50_000,), 1.0))
    assert len(server.requests) == 2


def test_cut_download_without_content_length_fails_its_checksum(server, tmp_path):
    data = _zip_checkpoint(2.0)
    digest = hashlib.sha256(data).hexdigest()
    server.files["/s/model.pth"] = data
    server.cut["/s/model.pth"] = len(data) - 100
    with pytest.raises(CheckpointError, match=r"sha256 .* does not match"):
        resolve_checkpoint(server.url(f"/s/model.pth#sha256={digest}"))
    assert _files(tmp_path / "cache") == []


def test_unverifiable_download_without_content_length_is_refused(server, tmp_path):
    server.files["/t/table.csv"] = b"a,b\n1,2\n"
    dest = tmp_path / "dl" / "table.csv"
    with pytest.raises(DownloadError, match=r"no Content-Length, no sha256 is known.*#sha256="):
        download_file(server.url("/t/table.csv"), dest)
    assert not dest.exists()
    digest = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert download_file(server.url(f"/t/table.csv#sha256={digest}"), dest).read_bytes() == b"a,b\n1,2\n"


def test_truncated_file_already_in_the_cache_is_fetched_again(server, tmp_path):
    data = _zip_checkpoint(3.0)
    server.files["/c/model.pth"] = data
    dest = url_cache_path(server.url("/c/model.pth"), tmp_path / "cache" / "checkpoints", "checkpoint.pth")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[: len(data) // 2])  # what an older version cached from a cut answer
    assert resolve_checkpoint(server.url("/c/model.pth")).read_bytes() == data
    assert server.requests == ["/c/model.pth"]
