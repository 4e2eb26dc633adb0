"""make demo's steps compose as the CLI would compose them (a misspelt override in the demo
would otherwise surface only at the end of a long `make demo`); the demo itself runs in CI's
sibling target, not here."""

from __future__ import annotations

import importlib.util

from selfsup_vis.config import compose
from tests.conftest import REPO


def _demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_demo_step_composes(tmp_path):
    demo = _demo()
    steps = demo.steps(tmp_path)
    assert len({name for name, _ in steps}) == len(steps)  # one run dir per step
    for name, overrides in steps:
        cfg = compose([*overrides, *demo.QUIET], run_dir=tmp_path / name, activate=False)
        assert cfg.task.name == overrides[0].removeprefix("task=")
