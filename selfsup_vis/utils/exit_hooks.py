"""Hooks that must run when the command ends, however it ends.

Hydra's sweeper raises as soon as a job fails, before ``on_multirun_end``, so the sweep's
status table and summary are printed from an exit hook. ``atexit`` alone would run them only
when the interpreter exits; ``__main__.main`` also calls ``run_pending()`` when Hydra returns or
raises, so a CLI run inside a longer-lived process (tests, notebooks) prints them in order.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable

_pending: list[Callable[[], object]] = []


def at_exit(hook: Callable[[], object]) -> None:
    """Run ``hook`` when the command ends (``run_pending``) or, failing that, at interpreter exit."""
    _pending.append(hook)
    atexit.register(hook)


def run_pending() -> None:
    """Run and forget the hooks registered so far (each once), in registration order."""
    while _pending:
        hook = _pending.pop(0)
        atexit.unregister(hook)
        hook()
