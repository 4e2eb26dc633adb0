"""Shared test helpers: compose configs like the CLI does, run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from selfsup_vis.config import conf_dir, register_configs

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SELFSUP_VIS_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

torch.set_num_threads(min(2, torch.get_num_threads()))
register_configs()


def compose_cfg(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """Compose the root config with ``overrides`` and make it the active Hydra config."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose_in(tmp_path: Path) -> Iterator:
    """``compose_in(overrides)`` → config whose run directory is ``tmp_path``."""
    yield lambda overrides: compose_cfg(overrides, tmp_path)
    GlobalHydra.instance().clear()


def run_inprocess(overrides: list[str], out_dir: Path) -> dict:
    """Compose like the CLI and run the task through the harness in this process."""
    from selfsup_vis.tasks.common import run_task

    try:
        return run_task(compose_cfg(overrides, out_dir))
    finally:
        GlobalHydra.instance().clear()


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m selfsup_vis <args>`` in a subprocess, offline, with a small thread budget."""
    full_env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "2",
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


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"


def needs_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path
