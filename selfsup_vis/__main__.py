"""Entry point: ``python -m selfsup_vis task=<task> model=<model> dataset=<dataset> ...``.

Hydra parses the command line and composes the config, exactly as in any Hydra app (tab
completion, ``--config-dir``, ``hydra.searchpath``, ``+experiment=...``, ``--cfg``, ``--info``);
then the function named by ``task._target_`` runs. Adding a task never changes this file.

Two things are ours:

- Config errors (a misspelt key, an unknown option, a bad value) print one message built from
  the config Hydra composed (:func:`selfsup_vis.config.validate.config_error_message`) and exit
  with 2, a single run's before its run directory is made (the ``hydra.callbacks.validate``
  callback); runtime errors exit with 1.
- This module and everything it imports at the top are torch-free: ``--help``, ``--cfg job`` and
  a misspelt key answer in about a second. torch, Lightning and timm load when a job starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import hydra
from hydra._internal import utils as hydra_internal
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from selfsup_vis.config import conf_dir  # importing it registers the schemas
from selfsup_vis.config.validate import ConfigError, ConfigRefused, config_error_message
from selfsup_vis.utils.exit_hooks import run_pending


def is_config_error(err: BaseException) -> bool:
    """Config errors exit with 2: bad values, failed composition, a missing mandatory key."""
    return isinstance(err, ConfigError) or type(err).__module__.startswith(("omegaconf", "hydra.errors"))


def full_errors(cfg: DictConfig | None = None) -> bool:
    """Tracebacks on the console: HYDRA_FULL_ERROR=1 or log_level=DEBUG."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or (
        cfg is not None and str(cfg.get("log_level", "INFO")).upper() == "DEBUG")


class _NoTracebackOnConsole(logging.Filter):
    """Keeps records carrying a traceback (``log.exception``) off the console: the one-line
    error is printed by ``report_error``; the log file still gets the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


def quiet_console_tracebacks() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_NoTracebackOnConsole())


def report_error(err: BaseException, cfg: DictConfig | None = None) -> int:
    """One clear line on stderr (then the rest of the message); the traceback only with
    HYDRA_FULL_ERROR=1 or log_level=DEBUG (always in the run's log file and summary.json).
    Returns the exit code: 2 for config errors, 1 for runtime errors."""
    code = 2 if is_config_error(err) else 1
    message = (config_error_message(err) if code == 2 else str(err).strip()) or type(err).__name__
    kind = "config error" if code == 2 else type(err).__name__
    print(f"Error ({kind}): {message}", file=sys.stderr)
    if full_errors(cfg):
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    elif code == 1:
        where = ""
        if HydraConfig.initialized():
            where = f"; summary: {HydraConfig.get().runtime.output_dir}/summary.json"
        print(f"(traceback: HYDRA_FULL_ERROR=1 or log_level=DEBUG{where})", file=sys.stderr)
    return code


@contextlib.contextmanager
def config_errors_exit_2() -> Iterator[None]:
    """While the command runs, Hydra's error reporter reports config errors our way.

    Hydra composes the config (and launches a sweep) inside ``hydra._internal.utils.
    run_and_report``, which prints a traceback and exits with 1 for any error. Its caller looks
    the reporter up at each call, so it is swapped here for one that prints a config error as a
    single message (valid keys, close match, choices) with exit code 2, and hands every other
    error to Hydra's own reporter. Hydra's parsing, search path and composition stay Hydra's."""
    hydra_report = hydra_internal.run_and_report

    def report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as err:
            if not is_config_error(err):
                return hydra_report(_raiser(err))
            raise SystemExit(report_error(err)) from None

    hydra_internal.run_and_report = report
    try:
        yield
    finally:
        hydra_internal.run_and_report = hydra_report


def _raiser(err: BaseException) -> Callable[[], Any]:
    def again() -> Any:
        raise err
    return again


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> object:
    from selfsup_vis.tasks.common import run_task  # torch, Lightning and timm: only for a job

    if HydraConfig.get().mode != RunMode.RUN:
        return run_task(cfg)  # sweeps: each job's failure is the launcher's to record
    if not full_errors(cfg):
        quiet_console_tracebacks()
    try:
        return run_task(cfg)
    except Exception as err:  # a single run: one clear line and the exit code, not Hydra's dump
        raise SystemExit(report_error(err, cfg)) from None


def main() -> None:
    try:
        with config_errors_exit_2():
            _hydra_main()
    except ConfigRefused as refused:  # a bad value, found before the run directory was made
        raise SystemExit(report_error(refused.error)) from None
    except Exception as err:  # --help / --info compose outside Hydra's reporter
        if not is_config_error(err):
            raise
        raise SystemExit(report_error(err)) from None
    finally:
        run_pending()  # a sweep's status table and summary, also when Hydra raised


if __name__ == "__main__":
    main()
