"""Signals mean what schedulers mean (issue 24 item 3), with real subprocesses and real signals:
a local ``task=pretrain`` stopped by TERM / INT / USR1 checkpoints, writes status
``interrupted`` with the signal, a summary and a report, and exits 128 + signal; in a
``hydra/launcher=local`` sweep one job killed from outside does not kill its sibling, and the
table marks it killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import THREADS

TINY_PRETRAIN = ["task=pretrain", "model=mae_tiny", "dataset=synthetic", "dataset.samples_per_class=8",
                 "dataset.val_samples_per_class=2", "dataset.batch_size=8", "trainer.max_steps=100000",
                 "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=5",
                 "callbacks.embedding=null", "callbacks.reconstruction=null", "callbacks.feature_health=null",
                 "callbacks.attention=null", "logger=csv"]
MARKER = "TERM/INT/USR1/USR2 checkpoint at the next batch boundary"


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": THREADS, "PYTHONUNBUFFERED": "1"}
    for k in [k for k in env if k.startswith("SLURM_")]:
        env.pop(k)  # a local run, even when the tests run inside a Slurm allocation
    return env


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended ({proc.returncode}) before {what}:\n{out[-4000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _log_has(run_dir: Path, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in run_dir.glob("*.log"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["TERM", "INT", "USR1"])
def test_local_pretrain_stopped_by_a_signal(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "selfsup_vis", *TINY_PRETRAIN, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _log_has(run_dir, MARKER), proc, 300, "training to start")
        time.sleep(1.0)  # a few batches in
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out[-4000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == sig, status
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig
    assert signal.Signals(sig).name in summary["error"]
    assert (run_dir / "report.html").is_file()
    ckpt = run_dir / "checkpoints" / "requeue.ckpt"
    assert ckpt.is_file() and "checkpointed at step" in summary["error"]
    assert "scontrol requeue" not in out  # nothing is requeued locally


@pytest.mark.slow
def test_local_sweep_job_killed_from_outside_leaves_its_sibling_alone(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsup_vis", "-m", "hydra/launcher=local", *TINY_PRETRAIN[:-1],
         "trainer.max_steps=60,100000", "logger=csv", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def records() -> dict[str, dict]:
        out = {}
        for p in sweep.glob("*/status.json"):
            try:
                r = json.loads(p.read_text())
            except ValueError:
                continue
            out[" ".join(r["overrides"])] = {**r, "dir": p.parent}
        return out

    try:
        _wait_for(lambda: any("100000" in k and _log_has(r["dir"], MARKER)
                              for k, r in records().items()), proc, 400, "the long job to train")
        victim = next(r for k, r in records().items() if "100000" in k)
        os.kill(victim["pid"], signal.SIGKILL)  # what the out-of-memory killer does
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    jobs = records()
    short = next(r for k, r in jobs.items() if "max_steps=60" in k)
    killed = next(r for k, r in jobs.items() if "100000" in k)
    assert short["status"] == "done", (short, out[-3000:])  # the sibling finished its training
    assert killed["status"] == "killed (signal 9)" and "killed from outside" in killed["error"]
    assert "killed (signal 9)" in out and "1 done, 1 not done" in out


_WARNED_AFTER_THE_WORK = """
import os, signal, sys, time
from selfsup_vis.launch.signals import Interrupted, catch_signals
with catch_signals():
    os.kill(os.getpid(), signal.SIGUSR1)  # Slurm's pre-timeout warning while the work runs
    time.sleep(0.2)
    print("carried on", flush=True)
os.kill(os.getpid(), signal.SIGUSR1)  # and once the work is done, just before the limit
time.sleep(0.2)
print("finished", flush=True)
"""


@pytest.mark.parametrize("slurm", [True, False], ids=["slurm-batch-job", "local"])
def test_a_pre_timeout_warning_near_the_limit_does_not_fail_a_finished_job(slurm):
    """In a Slurm batch job USR1 is the pre-timeout warning: outside training it is logged and
    the work goes on, and after the work it is ignored, so a job finishing within the warning
    window exits 0 (Slurm records COMPLETED, not FAILED 140). Locally USR1 stops the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    if slurm:
        env.update(SLURM_JOB_ID="42", SLURM_JOB_NAME="selfsup_vis")
    proc = subprocess.run([sys.executable, "-c", _WARNED_AFTER_THE_WORK], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    if slurm:
        assert proc.returncode == 0 and proc.stdout.split() == ["carried", "on", "finished"], proc.stderr
        assert "pre-timeout warning" in proc.stderr
    else:
        assert proc.returncode != 0 and "carried on" not in proc.stdout and "Interrupted" in proc.stderr
