"""Nothing lost across requeues (issue 24 item 4, the parts that need no Slurm): a training run
stopped by a signal and resumed in its run directory (what a requeued job is) keeps the CSV
metrics of every attempt, each row tagged with its attempt; TensorBoard continues in the same
folder with the final hparams; the W&B offline attempts share one run id, none is left
running, and the provenance is one flat copy; a plain ``scancel`` is told from a preemption."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from selfsup_vis.launch import signals
from tests.conftest import assert_ok, run_main
from tests.logreaders import tensorboard_hparams, wandb_file_records

PRETRAIN = ["task=pretrain", "model=mae_tiny", "dataset=synthetic", "dataset.samples_per_class=4",
            "dataset.val_samples_per_class=1", "dataset.batch_size=8", "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks.embedding=null",
            "callbacks.reconstruction=null", "callbacks.feature_health=null", "callbacks.attention=null",
            "callbacks.checkpoint_last_steps.every_n_train_steps=2", "logger=csv"]


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# the three tests share one interrupted-and-resumed run: one xdist worker, one run (slow: ~10 s)
def REQUEUED(test):  # noqa: N802  (a decorator named as a constant marker)
    return pytest.mark.slow(pytest.mark.xdist_group("requeued_run")(test))


@pytest.fixture(scope="module")
def requeued_run(tmp_path_factory) -> Path:
    """A training run stopped by a real SIGUSR1 after step 3 (checkpointed, status
    ``interrupted``: what a requeued job leaves), then run again in its directory: the second
    attempt resumes it (an unfinished run is never refused) and trains to step 8."""
    tmp = tmp_path_factory.mktemp("requeue")
    run_dir = tmp / "run"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("SLURM_")]:
            mp.delenv(k)  # a local run, even when the tests run inside a Slurm allocation
        torch.set_num_threads(1)
        try:
            first = run_main([*PRETRAIN, "logger=many", "trainer.max_steps=100", f"hydra.run.dir={run_dir}",
                              f"+callbacks.stop={{_target_: {__name__}.SignalAt, step: 3}}"], tmp)
            assert first.returncode == 128 + signal.SIGUSR1, first.stderr[-3000:]
            assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
            assert_ok(run_main([*PRETRAIN, "logger=many", "trainer.max_steps=8", f"hydra.run.dir={run_dir}"], tmp))
        finally:
            torch.set_num_threads(threads)
    return run_dir


@REQUEUED
def test_resumed_training_keeps_the_csv_rows_of_every_attempt(requeued_run):
    rows = _rows(requeued_run)
    first = [int(r["step"]) for r in rows if r["attempt"] == "1" and r.get("train/loss")]
    second = [int(r["step"]) for r in rows if r["attempt"] == "2" and r.get("train/loss")]
    assert first and max(first) < 3  # the first attempt's rows are kept
    assert second and min(second) >= 3 and max(second) == 7  # resumed from its checkpoint, not from 0


@REQUEUED
def test_resumed_tensorboard_continues_in_one_folder_with_the_final_hparams(requeued_run):
    tb = requeued_run / "tensorboard"
    assert not [p for p in tb.iterdir() if p.is_dir()]  # no second run folder
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 7  # one increasing curve
    assert [e.step for e in acc.Scalars("run/succeeded")] == [0]  # results once, by the last attempt
    hparams, _ = tensorboard_hparams(tb)
    assert hparams["trainer.max_steps"] == 8 and "trained by this run" in hparams["provenance.weights"]
    saved = yaml.safe_load((tb / "hparams.yaml").read_text())
    assert saved["trainer.max_steps"] == 8 and saved["provenance.weights"] == hparams["provenance.weights"]
    assert "provenance" not in saved  # one flat copy, no nested one


@REQUEUED
def test_resumed_wandb_run_keeps_its_id_and_no_attempt_is_left_running(requeued_run):
    attempts = sorted(requeued_run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(attempts) == 2
    runs, exits, configs, steps = [], [], [], []
    for path in attempts:
        records = list(wandb_file_records(path))
        runs += [r.run.run_id for r in records if r.WhichOneof("record_type") == "run"]
        exits.append([r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"])
        configs.append([(i.key or "/".join(i.nested_key), json.loads(i.value_json))
                        for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update])
        steps.append([json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "history"
                      for i in r.history.item if (i.key or "/".join(i.nested_key)) == "trainer/global_step"])
    assert len(set(runs)) == 1  # `wandb sync` joins the attempts into one run, in start order
    assert exits[0] and exits[1] == [0]  # the first attempt ended (not "running"), the last finished
    assert max(steps[0]) < 3 <= min(steps[1])  # the second attempt continues the steps
    prov = [(k, v) for cfg in configs for k, v in cfg if k.startswith("provenance")]
    assert prov and all(k.startswith("provenance.") for k, _ in prov)  # flat, no nested copy
    assert len({k for k, _ in prov}) == len(prov)  # each key logged once
    assert not [k for k, _ in configs[0] if k.startswith("provenance")]  # by the attempt that ended the run


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


class SignalAt(pl.Callback):
    """Sends this process ``signum`` after training step ``step``: a real signal, handled by the
    real handlers (what Slurm's pre-timeout warning or a local ``kill`` does)."""

    def __init__(self, step: int, signum: int = signal.SIGUSR1) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
