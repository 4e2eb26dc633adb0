"""Checkpoint and requeue a Lightning training job on Slurm, and resume it where it stopped.

Why our own and not Lightning's ``SLURMEnvironment(auto_requeue=True)``: Lightning saves the
checkpoint *inside the signal handler*, i.e. wherever each rank happens to be; with 2 DDP ranks
that save (a collective) meets the other rank inside an all-reduce and the job deadlocks until
its hard limit. submitit's own requeue (``max_num_timeout``) resubmits the job without a
checkpoint of the training state. ``RequeueOnSignal`` instead only *notes* the signal in the
handler; after the next training batch all ranks agree (one boolean all-reduce), save the
checkpoint together, rank 0 runs ``scontrol requeue <job>``, and every rank leaves with
``Requeued`` (a ``SystemExit``: submitit stores no result, so the submitting command keeps
waiting for the requeued job). The requeued job runs the same Hydra job in the same folder;
``task=pretrain`` finds the checkpoint there (``find_resume_checkpoint``) and resumes.

Signals (see :mod:`selfsup_vis.launch.signals`): Slurm sends what ``sbatch --signal`` asks for
before the time limit (the submitit launcher asks for ``USR2@hydra.launcher.signal_delay_s``;
``scancel --signal=USR1 <job>`` works too): checkpoint and requeue. ``SIGTERM`` requeues only
when Slurm says the job is being preempted; a plain ``scancel`` (TERM without the warning)
checkpoints and ends the job ``cancelled``, never requeued. Outside Slurm every stop signal
(TERM, INT, USR1, USR2) checkpoints and ends the run ``interrupted`` with exit code
128 + signal; nothing is requeued.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from selfsup_vis.launch.signals import (
    WARNING_SIGNALS,
    Interrupted,
    in_slurm_batch_job,
    meaning,
    signal_name,
)
from selfsup_vis.launch.status import slurm_job_id

log = logging.getLogger(__name__)

REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
CHECKPOINT_NAMES = ("last.ckpt", "requeue.ckpt")


class Requeued(SystemExit):
    """Leave the job after checkpointing: it has been requeued and will resume."""


class RequeueOnSignal(pl.Callback):
    """On SIGUSR1/SIGUSR2/SIGTERM/SIGINT during training: checkpoint to
    ``<dirpath>/requeue.ckpt`` after the current batch (all ranks together); then in a Slurm
    batch job on the pre-timeout warning or a preemption requeue and exit, otherwise raise
    :class:`~selfsup_vis.launch.signals.Interrupted` (``cancelled`` / ``interrupted``).

    Args:
        dirpath: where the checkpoint goes (default: the first ModelCheckpoint's dirpath, else
            ``<default_root_dir>/checkpoints``).
        max_requeues: stop requeuing after this many restarts (``SLURM_RESTART_COUNT``);
            the job then only checkpoints and exits.
    """

    def __init__(self, dirpath: str | None = None, max_requeues: int = 100) -> None:
        self.dirpath = dirpath
        self.max_requeues = max_requeues
        self._signum = 0
        self._previous: dict[int, Any] = {}

    @staticmethod
    def active() -> bool:
        """Signals can be handled (the main thread), in Slurm or not."""
        return threading.current_thread() is threading.main_thread()

    def _note(self, signum: int, frame: Any) -> None:
        if not self._signum:
            log.warning("received %s: checkpointing after this batch", signal_name(signum))
        self._signum = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning registers its own SIGUSR1/SIGTERM handlers just before this hook; ours replace
        # them while training runs and the previous ones come back afterwards.
        if not self.active():
            return
        self._signum = 0
        for sig in REQUEUE_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)
        log.info("training: TERM/INT/USR1/USR2 checkpoint at the next batch boundary%s",
                 " (USR1/USR2 or a preemption then requeue the job)" if in_slurm_batch_job() else "")

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _checkpoint_path(self, trainer: pl.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath) / "requeue.ckpt"
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "dirpath", None):
                return Path(cb.dirpath) / "requeue.ckpt"
        return Path(trainer.default_root_dir) / "checkpoints" / "requeue.ckpt"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._previous:
            return
        # every rank takes part, so all of them stop after the same batch (no deadlock)
        if not trainer.strategy.reduce_boolean_decision(bool(self._signum), all=False):
            return
        path = self._checkpoint_path(trainer)
        trainer.save_checkpoint(str(path))
        log.warning("saved %s at step %d", path, trainer.global_step)
        signum = self._signum or signal.SIGTERM  # other ranks learn of it from the all-reduce
        status = meaning(signum)
        if not in_slurm_batch_job() or (signum not in WARNING_SIGNALS and status != "preempted"):
            trainer.strategy.barrier("interrupted")
            self._restore()
            raise Interrupted(signum, status, f"checkpointed at step {trainer.global_step} to {path}")
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        job_id = slurm_job_id()
        if trainer.is_global_zero and job_id:
            if restarts >= self.max_requeues:
                log.error("job %s already requeued %d times: not requeuing again", job_id, restarts)
            else:
                done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
                log.warning("scontrol requeue %s: %s", job_id,
                            "ok" if done.returncode == 0 else (done.stderr.strip() or done.returncode))
        trainer.strategy.barrier("requeue")
        self._restore()
        # Slurm now cancels this attempt's step with SIGTERM. Lightning's own TERM handler (back
        # after _restore) broadcasts to the other ranks, which may have left already: under DDP
        # that broadcast failed during teardown and the attempt ended failed instead of requeued.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Requeued(f"checkpointed at step {trainer.global_step} and requeued job {job_id}")


def find_resume_checkpoint(*dirs: str | Path | None) -> Path | None:
    """The newest ``last.ckpt`` / ``requeue.ckpt`` (by training step) in ``dirs``: what a
    requeued or restarted job resumes from when no ``task.ckpt_path`` is given."""
    found: list[tuple[int, float, Path]] = []
    for d in dirs:
        if not d:
            continue
        for name in CHECKPOINT_NAMES:
            p = Path(d) / name
            if p.is_file():
                try:
                    step = int(torch.load(p, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
                except Exception as err:  # a half-written file from a killed job
                    log.warning("ignoring unreadable checkpoint %s: %s", p, err)
                    continue
                found.append((step, p.stat().st_mtime, p))
    return max(found)[2] if found else None
