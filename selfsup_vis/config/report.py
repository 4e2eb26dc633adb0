"""Schema of ``task=summarize`` (the sweep summary)."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from selfsup_vis.config.schemas import TaskConfig


@dataclass
class SummarizeTaskConfig(TaskConfig):
    _target_: str = "selfsup_vis.tasks.summarize.run"
    name: str = "summarize"
    sweep_dir: str = MISSING  # a multirun directory, e.g. multirun/tsne/2025-01-01_12-00-00
    output_dir: str | None = None  # where the table, plots and report.html go (default: sweep_dir)
    max_report_mb: float = 20.0


def register_report_schemas() -> None:
    ConfigStore.instance().store(group="schema/task", name="summarize", node=SummarizeTaskConfig)
