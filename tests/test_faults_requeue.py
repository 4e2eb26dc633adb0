"""Nothing lost across requeues (issue 24 item 4, the parts that need no Slurm): a training run
restarted in its run directory (what a requeued job is) keeps the CSV metrics of every attempt,
each row tagged with its attempt; a plain ``scancel`` is told from a preemption."""

from __future__ import annotations

import csv
import signal

from selfsup_vis.launch import signals
from tests.conftest import assert_ok, run_main

PRETRAIN = ["task=pretrain", "model=mae_tiny", "dataset=synthetic", "dataset.samples_per_class=4",
            "dataset.val_samples_per_class=1", "dataset.batch_size=8", "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks.embedding=null",
            "callbacks.reconstruction=null", "callbacks.feature_health=null", "callbacks.attention=null",
            "callbacks.checkpoint_last_steps.every_n_train_steps=2", "logger=csv"]


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_restarted_training_keeps_the_csv_rows_of_every_attempt(tmp_path, one_thread):
    run_dir = tmp_path / "run"
    assert_ok(run_main([*PRETRAIN, "trainer.max_steps=6", f"hydra.run.dir={run_dir}"], tmp_path))
    first = _rows(run_dir)
    assert first and {r["attempt"] for r in first} == {"1"}
    # the same run directory again (a requeued job), training further from its checkpoint
    proc = run_main([*PRETRAIN, "trainer.max_steps=12", f"hydra.run.dir={run_dir}"], tmp_path)
    assert_ok(proc)
    rows = _rows(run_dir)
    assert rows[: len(first)] == [{**r, **{k: "" for k in rows[0] if k not in r}} for r in first]  # kept
    second = [r for r in rows if r["attempt"] == "2"]
    steps = [int(r["step"]) for r in second]
    assert second and min(steps) >= 5 and max(steps) >= 10  # resumed, not restarted from 0


def test_term_is_a_cancel_unless_slurm_says_preempted(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert signals.meaning(signal.SIGTERM) == "interrupted"  # not in Slurm: a local stop
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setattr(signals, "slurm_state", lambda job: "CANCELLED")
    assert signals.meaning(signal.SIGTERM) == "cancelled"
    assert signals.meaning(signal.SIGUSR2) == "interrupted"  # the pre-timeout warning
    monkeypatch.setattr(signals, "slurm_state", lambda job: "PREEMPTED")
    assert signals.meaning(signal.SIGTERM) == "preempted"
    err = signals.Interrupted(signal.SIGTERM)
    assert err.exit_code == 143 and err.status == "preempted"
