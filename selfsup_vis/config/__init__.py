"""Typed config schemas; ``register_configs()`` puts them all into Hydra's ConfigStore."""

from __future__ import annotations

from selfsup_vis.config import (
    attention,
    callbacks,
    compare,
    dense,
    model,
    report,
    schemas,
    shape_bias,
    tasks_train,
)
from selfsup_vis.config.paths import conf_dir
from selfsup_vis.config.resolvers import register_resolvers

__all__ = ["conf_dir", "register_configs"]


def register_configs() -> None:
    """The ``sv.*`` resolvers, then each module's schemas (one module per concern)."""
    register_resolvers()
    schemas.register()
    model.register_model_schemas()
    callbacks.register_callback_schemas()
    shape_bias.register_shape_bias_schemas()
    tasks_train.register_train_schemas()
    attention.register_attention_schemas()
    report.register_report_schemas()
    compare.register_compare_schemas()
    dense.register_dense_schemas()
