"""``model.pretrained=true`` on a machine without network fails within seconds with a message
naming HF_HUB_OFFLINE, the cache and ``model.checkpoint=`` (it retried the Hub for ~50 s and
then reported a "config error"). Nothing is mocked: the Hub is a local port nobody listens on."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import timm

import selfsup_vis.tasks.tsne  # noqa: F401 - loaded before the clock starts, as in a CLI job
from selfsup_vis.checkpoints.hub import endpoint_reachable
from tests.conftest import run_main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("offline_flag", [False, True], ids=["unreachable-hub", "HF_HUB_OFFLINE"])
def test_pretrained_offline_fails_fast_and_says_what_to_do(tmp_path: Path, offline_flag: bool) -> None:
    cache = tmp_path / "hf_cache"
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HUB_CACHE": str(cache),
           "TORCH_HOME": str(tmp_path / "torch"), "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    if offline_flag:
        env["HF_HUB_OFFLINE"] = "1"
    timm.list_models()  # timm's registry, built once per process (as the CLI's startup does)
    start = time.perf_counter()
    proc = run_main(["task=tsne", "model=timm", "model.name=resnet18", "model.pretrained=true",
                     "task.max_samples_per_class=2", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr  # not a config error: the config is right
    assert seconds <= 5.0, f"took {seconds:.1f} s"
    message = proc.stderr
    assert "config error" not in message
    assert "HF_HUB_OFFLINE" in message and str(cache) in message
    assert "model.checkpoint=" in message
    assert ("HF_HUB_OFFLINE is set" if offline_flag else env["HF_ENDPOINT"]) in message


def test_the_probe_goes_where_requests_would_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directly, or through HTTPS_PROXY / HTTP_PROXY when one is set (clusters without direct
    access reach the Hub through a proxy: a direct probe would refuse them wrongly)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        open_url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        assert endpoint_reachable(open_url) and not endpoint_reachable(f"http://127.0.0.1:{_closed_port()}")
        monkeypatch.setenv("HTTP_PROXY", open_url)
        monkeypatch.setenv("http_proxy", open_url)
        assert endpoint_reachable(f"http://127.0.0.1:{_closed_port()}")  # the proxy answers for it
