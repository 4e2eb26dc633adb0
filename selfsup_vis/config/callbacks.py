"""Typed schemas of selfsup_vis's own training callbacks: the one source of their defaults
(the constructors have none, ``@takes_schema``). ``conf/callbacks/default.yaml`` pulls each in
with ``- /schema/callbacks/<name>@<name>`` and states only what differs (the output folders), so
that every knob can be overridden (``callbacks.reconstruction.every_n_steps=500``) and a misspelt
one fails at compose time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from selfsup_vis.config.schemas import EmbeddingConfig
from selfsup_vis.config.tasks_train import ReconstructionDisplay, ReconstructTaskConfig


@dataclass
class PeriodicCallbackConfig:
    """When a drawing callback runs: at a due step (every ``every_n_steps`` optimizer steps,
    and/or every ``every_n_epochs`` epochs) that is at least ``min_interval_s`` seconds of wall
    time after its previous snapshot (or the start of training), and once more at the end of
    training (``at_train_end``).

    The defaults bound what the snapshots cost on any run: a snapshot takes about a second on
    the tiny models (a few on a ViT-B), so one per 5 minutes costs a long run about 1 % per
    callback or less, and a short run (a 40-image folder, 10 epochs: 20 steps) pays for the
    final state only. ``scripts/bench_callbacks.py`` measures the cost on a small folder."""

    _target_: str = "???"
    every_n_steps: int | None = field(default=10, metadata={"min": 1})
    every_n_epochs: int | None = field(default=None, metadata={"min": 1})
    min_interval_s: float = field(default=300.0, metadata={"min": 0})
    at_train_end: bool = True
    dirpath: str | None = None  # default: <run dir>/<the callback's subdir>
    formats: list[str] = field(default_factory=lambda: ["png"])


@dataclass
class ReconstructionDumpConfig(PeriodicCallbackConfig):
    _target_: str = "selfsup_vis.callbacks.ReconstructionDump"
    num_images: int = field(default=4, metadata={"min": 1})
    seed: int = 0
    mask_ratio: float | None = None  # default: the model's own
    save_arrays: bool = True
    # shown as task=reconstruct shows them (the defaults are task=reconstruct's)
    display: ReconstructionDisplay = ReconstructTaskConfig.display
    display_neighbours: int = field(default=ReconstructTaskConfig.display_neighbours, metadata={"min": 1})
    mask_fill: list[float] = field(default_factory=lambda: list(ReconstructTaskConfig().mask_fill))
    mask_outline: bool = ReconstructTaskConfig.mask_outline


@dataclass
class EmbeddingSnapshotConfig(PeriodicCallbackConfig):
    _target_: str = "selfsup_vis.callbacks.EmbeddingSnapshot"
    num_samples: int = field(default=256, metadata={"min": 2})
    layer: str | None = None  # default: the model's default layer
    backend: str = "auto"  # auto (openTSNE) | opentsne | sklearn | pca | umap
    perplexity: float = EmbeddingConfig.perplexity  # the embedding's own default
    seed: int = 0
    batch_size: int = field(default=64, metadata={"min": 1})
    embed_kwargs: dict[str, Any] | None = None


@dataclass
class FeatureHealthConfig(PeriodicCallbackConfig):
    _target_: str = "selfsup_vis.callbacks.FeatureHealth"
    min_interval_s: float = field(default=60.0, metadata={"min": 0})  # numbers only: cheap
    num_samples: int = field(default=256, metadata={"min": 2})
    layer: str | None = None
    seed: int = 0
    batch_size: int = field(default=64, metadata={"min": 1})
    collapse_threshold: float = 0.02


@dataclass
class AttentionSnapshotConfig(PeriodicCallbackConfig):
    _target_: str = "selfsup_vis.callbacks.AttentionSnapshot"
    num_images: int = field(default=4, metadata={"min": 1})
    method: str | None = None  # null: cls_attention for ViTs, feature_norm otherwise
    block: int | None = None
    layer: str | None = None
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    seed: int = 0
    alpha: float = 0.5
    colormap: str = "inferno"
    save_arrays: bool = True


@dataclass
class DenseSnapshotConfig(PeriodicCallbackConfig):
    """task=dense's figure of fixed val images during training, the PCA basis fitted at its
    first call so that colours stay comparable across training."""

    _target_: str = "selfsup_vis.callbacks.DenseSnapshot"
    num_images: int = field(default=4, metadata={"min": 1})
    layer: str | None = None  # null: the model's last layer with a spatial grid
    normalisation: str = "none"  # none | l2 | standardise
    foreground: bool = True
    outlier_k: float = 6.0
    seed: int = 0
    save_arrays: bool = True


@dataclass
class TrainingStatsConfig:
    _target_: str = "selfsup_vis.callbacks.TrainingStats"
    grad_norm: bool = True
    gpu_memory: bool = True


CALLBACK_SCHEMAS = {"reconstruction": ReconstructionDumpConfig, "embedding": EmbeddingSnapshotConfig,
                    "feature_health": FeatureHealthConfig, "attention": AttentionSnapshotConfig,
                    "dense": DenseSnapshotConfig, "training_stats": TrainingStatsConfig}


def register_callback_schemas() -> None:
    cs = ConfigStore.instance()
    for name, node in CALLBACK_SCHEMAS.items():
        cs.store(group="schema/callbacks", name=name, node=node)
