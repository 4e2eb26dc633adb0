"""Typed schema of ``task=compare_embeddings`` and the composition of the models it compares.

Each compared model is named by an option of the ``model`` config group (``mae_tiny``,
``mocov2``, ``timm`` ...) plus a checkpoint and optional ``model.*`` overrides. Its config is
composed by Hydra itself (:func:`compose_model_config`: the same defaults list, typed schema and
validation as ``model=<option>`` on the command line), so a comparison entry can never differ
from what ``task=tsne model=<option>`` would build — and both share the feature cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from selfsup_vis.config.compose import compose
from selfsup_vis.config.schemas import EmbeddingConfig, Pooling, SubsetConfig, TaskConfig


class Baseline(StrEnum):
    pixels = "pixels"  # raw pixels (eval pipeline, area-downsampled to pixel_size²)
    random = "random"  # the first model's architecture with random weights (init seed = seed)


class SharedInit(StrEnum):
    pca = "pca"  # PCA of the first model's panel-layer features, for every map
    random = "random"  # one seeded Gaussian layout, for every map


class CkaMethod(StrEnum):
    auto = "auto"  # exact up to 50k samples, then minibatch
    exact = "exact"
    minibatch = "minibatch"


@dataclass
class CompareModelEntry:
    """One compared model: ``model`` is a model-group option (null: the run's ``model=``)."""

    model: str | None = None
    checkpoint: str | None = None  # path or URL; null: random weights (flagged)
    name: str | None = None  # panel / line label; default: <model> · <checkpoint file>
    layers: list[str] | None = None  # default: task.layers, else every layer of the model
    overrides: list[str] = field(default_factory=list)  # more model.<key>=<value> overrides


@dataclass
class CompareEmbeddingsTaskConfig(EmbeddingConfig, SubsetConfig, TaskConfig):
    """The data subset and the embedding settings are task=tsne's (SubsetConfig, EmbeddingConfig)."""

    _target_: str = "selfsup_vis.tasks.compare_embeddings.run"
    name: str = "compare_embeddings"
    models: list[CompareModelEntry] = field(default_factory=list)
    checkpoints: list[Any] = field(default_factory=list)  # shorthand: model= with each (null = random)
    baselines: list[Baseline] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # empty: every layer of each model
    panel_layer: str | None = None  # layer of the side-by-side panels; default: each model's default
    pooling: Pooling | None = None
    init: SharedInit = SharedInit.pca
    # CKA between every pair of layers of every pair of models
    cka: bool = True
    cka_method: CkaMethod = CkaMethod.auto
    cka_batch_size: int = field(default=1024, metadata={"min": 4})
    pixel_size: int = field(default=32, metadata={"min": 4})


def compose_model_config(option: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The ``model`` node Hydra composes for ``model=<option> model.<o> ...``: inside a running
    app with its own search path, in tests and scripts from the package's ``conf/``. An unknown
    option is Hydra's error listing the available ones."""
    return compose([f"model={option}",
                    *(o if o.startswith("model.") else f"model.{o}" for o in overrides)],
                   activate=False).model


def register_compare_schemas() -> None:
    ConfigStore.instance().store(group="schema/task", name="compare_embeddings", node=CompareEmbeddingsTaskConfig)
