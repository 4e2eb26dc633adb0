"""One way to compose the config outside ``python -m selfsup_vis``: tests, scripts and the tasks
that compose a second model config all call :func:`compose` instead of opening Hydra by hand.

Hydra's compose API keeps its state in a process-wide singleton (``GlobalHydra``) that must be
initialised around each composition and cleared after it; written out at every call site, a
missed ``clear()`` made the next composition fail or, worse, silently reuse another search path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, open_dict

from selfsup_vis.config.paths import conf_dir

__all__ = ["compose", "share_config_store"]


def compose(
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    *,
    config_name: str = "config",
    config_dir: str | Path | None = None,
    activate: bool = True,
) -> DictConfig:
    """The config ``python -m selfsup_vis <overrides>`` would run with, ``hydra`` node included
    (the schemas are in Hydra's ConfigStore since ``selfsup_vis.config`` was imported).

    Inside a running app (a task composing a second model while ``python -m selfsup_vis`` runs:
    GlobalHydra is initialised) it is composed with that app's search path, so a user's
    ``--config-dir`` and ``hydra.searchpath`` options are found, and the app's own Hydra state is
    left alone. Anywhere else (tests, scripts) it is composed from ``config_dir`` (default: the
    package's ``conf/``) and GlobalHydra is left as it was found; with ``activate`` it becomes the
    active Hydra config (``HydraConfig``), so ``${hydra:...}`` resolves as in a job: pass False
    to compose a second config (a model's) while a job runs. ``run_dir`` sets
    ``hydra.runtime.output_dir``.
    """
    running = GlobalHydra.instance().is_initialized()
    if running and config_dir is None:
        cfg = hydra.compose(config_name, overrides=list(overrides), return_hydra_config=True)
    else:
        backup = get_gh_backup()
        GlobalHydra.instance().clear()
        try:
            with hydra.initialize_config_dir(config_dir=str(Path(config_dir or conf_dir()).resolve()),
                                             version_base="1.3"):
                cfg = hydra.compose(config_name, overrides=list(overrides), return_hydra_config=True)
        finally:
            restore_gh_from_backup(backup)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
    if activate and not running:
        HydraConfig.instance().set_config(cfg)
    return cfg


def share_config_store() -> None:
    """Hydra 1.3 deep-copies its config repository, and with it the ConfigStore singleton and
    every schema in it, each time it composes or lists a group's options (~70 ms here): ``--help``
    lists every group and took 8 s, each ``compose()`` in the tests paid it again. A singleton
    copied is a second store that misses later registrations; Hydra 1.4 looks the store up instead
    of copying it (facebookresearch/hydra#2928). Until then a deep copy of the store is the store.
    The stored nodes are still copied on every load (``ConfigStore.load``), so nothing is shared
    that a composition could change."""
    ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
