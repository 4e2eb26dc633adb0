"""Shared test helpers: compose configs like the CLI does, run the real CLI in this process
(``run_main``) or, for the few true entry-point tests, in a subprocess (``run_cli``)."""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

# pytest-xdist (pyproject addopts: -n auto, see pytest_xdist_auto_num_workers) gives every worker
# an equal share of the cores, at least one thread, so BLAS/OpenMP/numba threads do not
# oversubscribe them (spinning OpenMP threads on a shared core cost several times what they
# save). Set before numba/torch read them.
THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = THREADS

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from selfsup_vis.__main__ import main as cli_main  # noqa: E402
from selfsup_vis.config import compose as compose_cfg  # noqa: E402  (the tests' name for it)
from selfsup_vis.tasks.common import run_task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SELFSUP_VIS_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

torch.set_num_threads(int(THREADS))
threadpool_limits(int(THREADS))  # numpy's BLAS if it was loaded before the variables were set


@pytest.fixture
def compose_in(tmp_path: Path) -> Iterator:
    """``compose_in(overrides)`` → config whose run directory is ``tmp_path``."""
    yield lambda overrides: compose_cfg(overrides, run_dir=tmp_path)


def run_inprocess(overrides: list[str], out_dir: Path) -> dict:
    """Compose like the CLI and run the task through the harness in this process."""
    return run_task(compose_cfg(overrides, run_dir=out_dir))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test that trains (also with ``-n 0``): on 2 shared, busy
    cores, 2 threads spin against other jobs and a 10 s training takes minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                     warmup: int = 0, cosine: bool = False, hflip: bool = False, batch: int = 32) -> None:
    """The tests' supervised training (attention's Grad-CAM, dense's foreground IoU): AdamW on
    random batches of in-memory images, seeded; optional linear warm-up over ``warmup`` steps, a
    cosine decay to 0 and random horizontal flips (none by default: a constant lr, no flips)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * (0.5 * (1 + math.cos(math.pi * step / steps)) if cosine else 1.0)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx]
        if hflip:
            xb = torch.where(torch.rand(batch, 1, 1, 1, generator=g) < 0.5, xb.flip(-1), xb)
        loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def run_job(cfg: DictConfig) -> dict:
    """What ``python -m selfsup_vis`` does after composing: the job sees no ``hydra`` node."""
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return run_task(cfg)


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m selfsup_vis <args>`` in a subprocess, offline, with a small thread budget."""
    full_env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": THREADS,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "selfsup_vis", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """What a CLI run changes in this process and a fresh process would not have: argv, cwd,
    environment, root-logger handlers (Hydra's job logging) and Hydra's singletons."""
    root = logging.getLogger()
    saved = (list(sys.argv), os.getcwd(), dict(os.environ), list(root.handlers), root.level)
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        sys.argv[:] = saved[0]
        os.chdir(saved[1])
        os.environ.clear()
        os.environ.update(saved[2])
        for handler in root.handlers:
            if handler not in saved[3]:
                handler.close()
        root.handlers[:] = saved[3]
        root.setLevel(saved[4])
        GlobalHydra.instance().clear()


def run_main(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m selfsup_vis <args>`` in this process: the real ``main()`` (argument parsing,
    Hydra, config errors, the harness, exit codes) with stdout/stderr captured, so a CLI test pays
    for its work and not for importing torch, timm and Lightning again."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with _process_state(cwd, {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv[:] = ["selfsup_vis", *args]
        try:
            cli_main()
        except SystemExit as stop:
            code = stop.code
    code = 0 if code is None else code if isinstance(code, int) else 1
    return subprocess.CompletedProcess(["selfsup_vis", *args], code, out.getvalue(), err.getvalue())


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"


class LocalHTTPServer:
    """A real ``http.server`` on 127.0.0.1 serving in a thread (the download tests): subclasses
    pass their request handler; ``with server:`` starts it and always shuts it down."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> LocalHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def checkpoint_bytes(value: float, n: int = 20_000) -> bytes:
    """A small real torch checkpoint (zip format) as bytes: ``{"w": full((n,), value)}``."""
    buf = io.BytesIO()
    torch.save({"w": torch.full((n,), value)}, buf)
    return buf.getvalue()


@pytest.fixture
def download_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads cached under ``tmp_path/cache`` (SELFSUP_VIS_CACHE), never the user's cache."""
    monkeypatch.setenv("SELFSUP_VIS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def needs_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the Slurm tests (one xdist group that mostly waits on jobs) start at once
    beside the rest instead of running alone at the end; then DDP and slow tests."""
    rank = {"slurm": 0, "ddp": 1, "slow": 2}
    items.sort(key=lambda item: min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=3))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than cores (at most 4), since the Slurm, DDP and sweep tests
    mostly wait on processes they started; the threads are split as if there were one each."""
    return min(4, (os.cpu_count() or 1) + 1)
