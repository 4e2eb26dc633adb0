"""Typed config schemas; ``register_configs()`` puts them all into Hydra's ConfigStore."""

from __future__ import annotations

from pathlib import Path


def register_configs() -> None:
    """Each module owns the schemas of one concern (root/data/trainer/browse/tsne, models,
    shape bias, reconstruct/pretrain)."""
    from selfsup_vis.config import model, schemas, shape_bias, tasks_train

    schemas.register()
    model.register_model_schemas()
    shape_bias.register_shape_bias_schemas()
    tasks_train.register_train_schemas()


def conf_dir() -> Path:
    """The ``conf/`` directory: inside the installed wheel, or top-level in a source checkout."""
    pkg = Path(__file__).resolve().parents[1]
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"selfsup_vis: no conf/config.yaml next to {pkg}")
