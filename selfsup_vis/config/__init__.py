"""Typed config schemas; ``register_configs()`` puts them all into Hydra's ConfigStore."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

# (module, function) pairs; each module owns the schemas of one concern.
_REGISTRARS = [
    ("selfsup_vis.config.schemas", "register"),
    ("selfsup_vis.config.model", "register_model_schemas"),
    ("selfsup_vis.config.shape_bias", "register_shape_bias_schemas"),
    ("selfsup_vis.config.tasks_train", "register_train_schemas"),
]


def register_configs() -> None:
    for module_name, fn in _REGISTRARS:
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as err:  # TEMP until every concern has its schemas
            if err.name != module_name:
                raise
            continue
        getattr(module, fn)()


def conf_dir() -> Path:
    """The ``conf/`` directory: inside the installed wheel, or top-level in a source checkout."""
    pkg = Path(__file__).resolve().parents[1]
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"selfsup_vis: no conf/config.yaml next to {pkg}")
