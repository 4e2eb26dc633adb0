"""The Slurm launcher presets against a real Slurm (``scripts/ci/slurm_up.sh`` starts a one-node
one; ``.ci/run`` does it for ``make test``). Skipped only when ``sinfo`` cannot reach a Slurm.

The commands are the README's (Sweeps and clusters), plus ``hydra.sweep.dir`` and tiny sizes; the
sweeps are submitted from this process (``run_main``), the jobs run where Slurm starts them.
Job states come from ``scontrol show job`` (the CI Slurm has ``accounting_storage/none``, so
no ``sacct``; finished jobs stay visible for MinJobAge).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, assert_ok, run_main

CI_CONF = Path(os.environ.get("SLURM_CI_DIR", "/tmp/selfsup_vis_slurm")) / "slurm.conf"
if "SLURM_CONF" not in os.environ and CI_CONF.is_file():
    os.environ["SLURM_CONF"] = str(CI_CONF)  # the one-node Slurm of scripts/ci/slurm_up.sh


def _slurm_reachable() -> str | None:
    if not shutil.which("sinfo"):
        return "no Slurm here (sinfo not installed): bash scripts/ci/slurm_up.sh"
    proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"no Slurm reachable (sinfo: {proc.stderr.strip()[:200]}): bash scripts/ci/slurm_up.sh"
    return None


_REASON = _slurm_reachable()
# one xdist worker runs them in turn (measured: spread over the workers, their jobs compete
# with each other and the suite takes 356 s instead of 316 s)
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm"),
              pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

TINY_PRETRAIN = ["task=pretrain", "model=mae_tiny", "dataset=synthetic", "dataset.samples_per_class=8",
                 "dataset.val_samples_per_class=2", "dataset.batch_size=8", "trainer.max_steps=80",
                 "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=5",
                 "callbacks.embedding=null", "callbacks.reconstruction=null", "callbacks.feature_health=null",
                 "callbacks.attention=null",  # AttentionSnapshot syncs a metric on rank 0 only: hangs DDP
                 "callbacks.checkpoint_last_steps.every_n_train_steps=5"]


def job_state(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def final_state(job_id: str, timeout: float = 120) -> dict[str, str]:
    """The job's record once Slurm has seen it end: submitit stores the result (and the sweep
    returns) a moment before the job's process exits."""
    deadline = time.time() + timeout
    while (state := job_state(job_id))["JobState"] in ("RUNNING", "COMPLETING") and time.time() < deadline:
        time.sleep(0.5)
    return state


def statuses(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/status.json"))]


def test_sweep_through_the_preset_as_in_the_readme(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_main(["-m", "hydra/launcher=slurm", "task=browse", "model=mae_tiny,simmim_tiny", "task.n_samples=2",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert_ok(proc)
    jobs = statuses(sweep)
    assert [j["status"] for j in jobs] == ["done", "done"] and all(j["slurm_job_id"] for j in jobs)
    assert len(list(sweep.glob("*/summary.json"))) == 2
    assert all(re.fullmatch(r"\d+_[0-9a-f]{8}", p.parent.name) for p in sweep.glob("*/status.json"))
    assert "2 jobs, 2 done, 0 not done" in proc.stdout
    for j in jobs:
        assert final_state(j["slurm_job_id"])["JobState"] == "COMPLETED"


@pytest.mark.ddp
def test_ddp_tsne_on_two_slurm_tasks_equals_one_process(tmp_path):
    common = ["task=tsne", "model=mocov2_tiny", "task.layers=[layer3,neck]", "task.max_num_class=5",
              "task.max_samples_per_class=7", "task.cache=false", "task.backend=pca", "task.projector=false",
              "dataset.batch_size=4"]
    assert_ok(run_main([*common, f"hydra.run.dir={tmp_path / 'single'}"], tmp_path))  # the reference, here
    sweep = tmp_path / "sweep"
    proc = run_main(["-m", "hydra/launcher=slurm", *common, "trainer=ddp", "trainer.accelerator=cpu",
                    "trainer.devices=2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert_ok(proc)
    (job_dir,) = [p.parent for p in sweep.glob("*/status.json")]
    rank1 = "".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_1_log.*")))  # .out and .err
    assert "local_rank=1(2)" in rank1 and "MEMBER: 2/2" in rank1, rank1[-2000:]  # Slurm task 1 of 2 joined
    for layer in ("layer3", "neck"):
        one = np.load(tmp_path / "single" / "features" / f"{layer}.npy")
        two = np.load(job_dir / "features" / f"{layer}.npy")
        assert one.shape == two.shape == (35, one.shape[1])
        np.testing.assert_allclose(one, two, atol=1e-5, rtol=0)


def test_failing_job_is_failed_in_slurm_and_in_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_main(["-m", "hydra/launcher=slurm", "task=browse", "task.split=nope,train", "task.n_samples=1",
                    f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode != 0
    jobs = {j["overrides"][1]: j for j in statuses(sweep)}
    bad, good = jobs["task.split=nope"], jobs["task.split=train"]
    assert bad["status"] == "failed" and bad["error"].startswith("ValueError: synthetic split 'nope' unknown")
    assert good["status"] == "done"  # the failing job did not stop the other one
    assert final_state(bad["slurm_job_id"])["JobState"] == "FAILED"
    assert final_state(bad["slurm_job_id"])["ExitCode"] == "1:0"
    assert final_state(good["slurm_job_id"])["JobState"] == "COMPLETED"
    table = proc.stderr[proc.stderr.index("2 jobs, 1 done, 1 not done"):]
    assert re.search(r"failed\s+\S+\s+task=browse task.split=nope .*ValueError: synthetic split 'nope'", table)
    (bad_dir,) = [p.parent for p in sweep.glob("*/status.json") if json.loads(p.read_text())["status"] == "failed"]
    assert "synthetic split 'nope' unknown" in (bad_dir / "selfsup_vis.log").read_text()  # the job's own log


@contextmanager
def _training_job(tmp_path: Path, sweep: Path, overrides: list[str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """A ``task=pretrain`` job submitted to Slurm by ``python -m selfsup_vis -m`` into ``sweep``:
    yields (the submitting process, the Slurm job id) once training has saved a checkpoint; the
    submitter is killed if it still runs when the block ends."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "selfsup_vis", "-m", "hydra/launcher=slurm", *TINY_PRETRAIN, *overrides,
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not list(sweep.glob("*/checkpoints/last.ckpt")):  # training is under way
            assert cli.poll() is None and time.time() < deadline, "no checkpoint before the signal"
            time.sleep(0.5)
        (status,) = statuses(sweep)
        yield cli, status["slurm_job_id"]
    finally:
        if cli.poll() is None:
            cli.kill()


@pytest.mark.parametrize("ranks", [1, 2])
def test_pretrain_signalled_before_its_limit_requeues_and_resumes(tmp_path, ranks):
    sweep = tmp_path / "sweep"
    trainer = ["trainer=cpu"] if ranks == 1 else ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    with _training_job(tmp_path, sweep, [*trainer, "logger=wandb"]) as (cli, job_id):
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        deadline = time.time() + 300
        while job_state(job_id).get("JobState") != "PENDING":  # requeued by the job itself
            assert cli.poll() is None and time.time() < deadline, job_state(job_id)
            time.sleep(0.5)
        # Slurm keeps a requeued job ineligible for ~2 min; start it now (an admin's `scontrol update`)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        out, _ = cli.communicate(timeout=300)
    assert cli.returncode == 0, out[-5000:]
    state = final_state(job_id)
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1"
    (job_dir,) = [p.parent for p in sweep.glob("*/status.json")]
    summary = json.loads((job_dir / "summary.json").read_text())
    resumed = summary["resumed_from"]
    assert resumed and resumed["path"].endswith("requeue.ckpt") and resumed["global_step"] >= 5
    assert summary["global_step"] == 80 > resumed["global_step"]
    log = (job_dir / "selfsup_vis.log").read_text()
    assert "checkpointing after this batch" in log and f"resuming from {resumed['path']}" in log
    assert json.loads((job_dir / "status.json").read_text())["status"] == "done"
    runs = list((job_dir / "wandb").glob("offline-run-*"))  # the W&B id (a hash of the job dir) is kept
    assert len({r.name.rsplit("-", 1)[1] for r in runs}) == 1 and len(runs) == 2
    print(f"ranks={ranks}: signalled, requeued, resumed at step {resumed['global_step']} -> {summary['global_step']}")


def test_plain_scancel_ends_the_job_cancelled_without_requeue(tmp_path):
    """Issue 24: ``scancel`` (TERM without the pre-timeout USR signal) is not a preemption: the
    training job checkpoints, ends ``cancelled`` and is not requeued; the submitting command
    returns (the CI Slurm has no sacct: the wait reads scontrol and the status file)."""
    sweep = tmp_path / "sweep"
    with _training_job(tmp_path, sweep, ["trainer=cpu", "trainer.max_steps=100000", "logger=csv"]) as (cli, job_id):
        subprocess.run(["scancel", job_id], check=True)
        out, _ = cli.communicate(timeout=240)  # the submitter returns
    assert cli.returncode != 0
    state = final_state(job_id)
    assert state["JobState"] == "CANCELLED" and state.get("Restarts", "0") == "0", state
    (job_dir,) = [p.parent for p in sweep.glob("*/status.json")]
    record = json.loads((job_dir / "status.json").read_text())
    assert record["status"] == "cancelled" and record["signal"] == 15, record
    assert json.loads((job_dir / "summary.json").read_text())["status"] == "cancelled"
    assert (job_dir / "checkpoints" / "requeue.ckpt").is_file()
    assert "scontrol requeue" not in (job_dir / "selfsup_vis.log").read_text()
    assert "cancelled" in out


def test_ci_scripts_are_executable():
    for name in ("slurm_up.sh", "slurm_down.sh"):
        assert os.access(REPO / "scripts" / "ci" / name, os.X_OK)
