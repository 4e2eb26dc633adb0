"""Typed schemas of ``task=shape_bias`` and ``task=plot_shape_bias``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import FigureFormat, TaskConfig


@dataclass
class ShapeBiasTaskConfig(TaskConfig):
    """Run a classifier over cue-conflict images and report its shape bias."""

    _target_: str = "selfsup_vis.tasks.shape_bias.run"
    name: str = "shape_bias"
    # subject name in the CSV (cue-conflict_<model_name>_session-1.csv); default: model.name
    model_name: str | None = None
    # "imagenet": 1000 logits -> 16 categories (model-vs-human); "identity": the classifier
    # outputs the dataset's categories; null: imagenet for 1000 outputs, identity otherwise
    decision_mapping: str | None = None
    split: str = "conflict"  # the dataset split to evaluate
    # tiny in-process training (synthetic data, no checkpoint): steps, split, learning rate
    train_steps: int = field(default=150, metadata={"min": 0})
    train_split: str = "train"
    train_lr: float = field(default=3e-3, metadata={"gt": 0})
    train: bool | None = None  # null: train only when the model has no checkpoint and data is synthetic
    # used when cfg.model is not a classifier (the root default) and the data is synthetic
    fallback_model: str = "classifier_tiny"
    # reference data drawn in the same figure: CSV dirs (humans, reference models), icons
    reference_csv_dirs: list[str] = field(default_factory=list)
    icons_dir: str | None = None
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.png, FigureFormat.pdf])


@dataclass
class PlotShapeBiasTaskConfig(TaskConfig):
    """Draw model-vs-human's matrix plot from CSV directories."""

    _target_: str = "selfsup_vis.tasks.plot_shape_bias.run"
    name: str = "plot_shape_bias"
    csv_dirs: list[str] = field(default_factory=list)
    csv_pattern: str = "*.csv"  # raw-data CSVs are recognised by their header
    models: list[str] = field(default_factory=list)  # empty: every model in the CSVs
    plotting_names: list[str] = field(default_factory=list)
    colors: list[Any] = field(default_factory=list)  # [r,g,b] 0-255 triples, flat numbers or names
    markers: list[str] = field(default_factory=list)
    include_humans: bool = True
    icons_dir: str | None = None  # null: the download cache when it has the icons, else names
    download_icons: bool = False  # fetch missing icons from model-vs-human (needs network)
    result_dir: str | None = None  # default: the Hydra run directory
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.pdf, FigureFormat.png])


def register_shape_bias_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="schema/task", name="shape_bias", node=ShapeBiasTaskConfig)
    cs.store(group="schema/task", name="plot_shape_bias", node=PlotShapeBiasTaskConfig)
