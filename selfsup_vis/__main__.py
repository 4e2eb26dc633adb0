"""Entry point: ``python -m selfsup_vis task=<task> model=<model> dataset=<dataset> ...``.

Composes the Hydra config and calls the function named by ``task._target_``; adding a task
never changes this file.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from selfsup_vis.config import conf_dir, register_configs
from selfsup_vis.config.validate import ConfigError, preflight
from selfsup_vis.tasks.common import run_task
from selfsup_vis.utils.exit_hooks import run_pending

register_configs()


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
    message = str(err).strip() or type(err).__name__
    kind = "config error" if code == 2 else type(err).__name__
    print(f"Error ({kind}): {message}", file=sys.stderr)
    if full_errors(cfg):
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    else:
        where = ""
        if HydraConfig.initialized():
            where = f"; summary: {HydraConfig.get().runtime.output_dir}/summary.json"
        print(f"(traceback: HYDRA_FULL_ERROR=1 or log_level=DEBUG{where})", file=sys.stderr)
    return code


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> object:
    if HydraConfig.get().mode != RunMode.RUN:
        return run_task(cfg)  # sweeps: each job's failure is the launcher's to record
    if not full_errors(cfg):
        quiet_console_tracebacks()
    try:
        return run_task(cfg)
    except Exception as err:  # a single run: one clear line and the exit code, not Hydra's dump
        raise SystemExit(report_error(err, cfg)) from None


def main() -> None:
    args = sys.argv[1:]
    if not any(a in ("-h", "--help", "--hydra-help") for a in args):  # help: hydra.help.template
        message = preflight(str(conf_dir()), "config", args)
        if message:
            print(f"Error (config error): {message}", file=sys.stderr)
            sys.exit(2)
    try:
        _hydra_main()
    finally:
        run_pending()  # a sweep's status table and summary, also when Hydra raised


if __name__ == "__main__":
    main()
