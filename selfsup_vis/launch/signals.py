"""What a signal to a run means, and the exception that carries it to ``run_task``.

Schedulers and people stop jobs with signals, and each has a meaning:

* local runs: ``SIGTERM`` (``kill``, ``timeout``, ``docker stop``), ``SIGINT`` (Ctrl-C),
  ``SIGUSR1``/``SIGUSR2``: stop, checkpoint where the task has one (``task=pretrain``, at the
  next batch boundary, see :mod:`selfsup_vis.launch.requeue`), write ``status.json``
  ``interrupted`` with the signal, the summary and the report, and exit ``128 + signal``
  (143 for TERM, 130 for INT) like any well-behaved Unix program. Nothing is requeued.
* Slurm: ``USR1``/``USR2`` are the pre-timeout warning the launcher asked for
  (``--signal=USR2@<s>`` from submitit): training checkpoints and requeues; other work carries
  on (finishing in time ends COMPLETED; the limit ends it TIMEOUT). ``TERM`` without that
  warning is ``scancel`` (status ``cancelled``, no requeue) unless Slurm says the job was
  preempted (status ``preempted``, training requeues).

:func:`catch_signals` installs the handlers for the duration of a task (main thread only);
they raise :class:`Interrupted`, which ``run_task`` turns into the status, the summary and
the exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selfsup_vis.launch.status import slurm_job_id, slurm_state

log = logging.getLogger(__name__)

#: signals that stop a run
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
#: Slurm's pre-timeout warnings (what ``sbatch --signal`` sends; ``scancel --signal=USR1``)
WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def in_slurm_batch_job() -> bool:
    """In a Slurm batch job (not an interactive allocation)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def preempted() -> bool:
    """Whether Slurm says this job is being preempted (its TERM is then not a ``scancel``)."""
    job = slurm_job_id()
    state = slurm_state(job) if job else None
    return bool(state) and state.split()[0] in ("PREEMPTED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED")


def meaning(signum: int) -> str:
    """``interrupted`` (local), ``cancelled`` (Slurm TERM: scancel) or ``preempted``."""
    if not in_slurm_batch_job() or signum in WARNING_SIGNALS:
        return "interrupted"
    if signum == signal.SIGTERM:
        return "preempted" if preempted() else "cancelled"
    return "interrupted"


class Interrupted(Exception):
    """The run was stopped by ``signum``; ``status`` says what that meant (see module)."""

    def __init__(self, signum: int, status: str | None = None, detail: str = "") -> None:
        self.signum = int(signum)
        self.status = status or meaning(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"{self.status} by {signal_name(self.signum)}" + (f": {detail}" if detail else ""))


def _raise(signum: int, frame: Any) -> None:
    log.warning("received %s: stopping the run", signal_name(signum))
    raise Interrupted(signum)


def _note_warning(signum: int, frame: Any) -> None:
    log.warning("received %s (Slurm's pre-timeout warning) outside training: carrying on; "
                "the time limit ends the job if the work does not finish first", signal_name(signum))


@contextmanager
def catch_signals() -> Iterator[None]:
    """Turn stop signals into :class:`Interrupted` while the block runs (main thread only;
    elsewhere a no-op). In a Slurm job the pre-timeout warnings are only logged here (training
    handles them itself) and stay ignored after the block, so a job that finishes just before
    its limit ends COMPLETED instead of being killed by a late warning's default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    slurm = in_slurm_batch_job()
    previous = {}
    for sig in STOP_SIGNALS:
        handler = _note_warning if slurm and sig in WARNING_SIGNALS else _raise
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if slurm and sig in WARNING_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)  # a warning after the work is done is harmless
            else:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
