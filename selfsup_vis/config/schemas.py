"""Typed schemas for the root config, trainer, datasets and the browse task.

They are stored in Hydra's ConfigStore under ``schema/<group>/<name>`` and pulled into the
YAML files with ``defaults: [/schema/<group>/<name>@_here_, _self_]``, so a misspelt key or a
value of the wrong type fails when the config is composed, not halfway through a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Phase(StrEnum):
    train = "train"
    val = "val"


class Pipeline(StrEnum):
    eval = "eval"
    mocov2 = "mocov2"
    multicrop = "multicrop"
    mae = "mae"
    simmim = "simmim"
    maskfeat = "maskfeat"


@dataclass
class TrainerConfig:
    """The subset of ``pytorch_lightning.Trainer`` arguments we expose (typos fail early)."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int = 50
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    accumulate_grad_batches: int = 1
    deterministic: Any = None
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    use_distributed_sampler: bool = True
    enable_progress_bar: bool = True
    enable_checkpointing: bool | None = None
    enable_model_summary: bool | None = None
    default_root_dir: str | None = None


@dataclass
class DataConfig:
    """Fields every dataset (a LightningDataModule) takes."""

    _target_: str = MISSING
    name: str = MISSING
    batch_size: int = 32
    num_workers: int = 0
    pin_memory: bool = False
    train_split: str = "train"
    eval_split: str = "val"


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "selfsup_vis.data.datamodule.SyntheticDataModule"
    name: str = "synthetic"
    num_classes: int = 8
    image_size: int = 64
    samples_per_class: int = 64
    val_samples_per_class: int = 16
    conflict_per_pair: int = 1
    seed: int = 0


@dataclass
class ImageFolderDataConfig(DataConfig):
    _target_: str = "selfsup_vis.data.datamodule.ImageFolderDataModule"
    name: str = "image_folder"
    root: str = MISSING
    train_dir: str | None = None
    val_dir: str | None = None
    skip_corrupt: bool = False


@dataclass
class ImageNetDataConfig(DataConfig):
    _target_: str = "selfsup_vis.data.datamodule.ImageNetDataModule"
    name: str = "imagenet"
    root: str = MISSING
    train_split: str = "train"
    eval_split: str = "val"
    label_file: str | None = None
    class_names_file: str | None = None
    skip_corrupt: bool = False


@dataclass
class CueConflictDataConfig(DataConfig):
    _target_: str = "selfsup_vis.data.datamodule.CueConflictDataModule"
    name: str = "cue_conflict"
    root: str = MISSING
    eval_split: str = "conflict"
    preprocessing: str = "model_vs_human"  # or "mmselfsup": resize 256, center-crop 224
    check_layout: bool = True


@dataclass
class BrowseTaskConfig:
    _target_: str = "selfsup_vis.tasks.browse.run"
    name: str = "browse"
    n_samples: int = 8
    seed: int = 0
    phase: Phase = Phase.train
    pipeline: Pipeline | None = None  # default: the model's training pipeline
    split: str | None = None  # default: dataset.train_split / eval_split by phase
    skip_type: list[str] = field(default_factory=list)
    show: bool = False
    show_interval: float = 2.0
    formats: list[str] = field(default_factory=lambda: ["png"])


class EmbeddingBackend(StrEnum):
    auto = "auto"  # openTSNE when installed, else sklearn
    opentsne = "opentsne"
    sklearn = "sklearn"
    pca = "pca"
    umap = "umap"


class Sampling(StrEnum):
    random = "random"
    first = "first"


@dataclass
class TsneTaskConfig:
    _target_: str = "selfsup_vis.tasks.tsne.run"
    name: str = "tsne"
    layers: list[str] = field(default_factory=list)  # empty: the model's default layer(s)
    pooling: str | None = None  # gap | cls | mean | cls+mean for token layers (model default)
    final_norm: bool = False  # ViTs: apply the encoder's final norm to block outputs too
    split: str | None = None  # default: dataset.eval_split
    max_num_class: int | None = 20
    class_idx: list[int] | None = None
    max_samples_per_class: int | None = None
    sampling: Sampling = Sampling.random
    seed: int = 0
    backend: EmbeddingBackend = EmbeddingBackend.auto
    perplexity: float = 30.0
    n_iter: int | None = None  # None: backend default (sklearn: 1000 as MMSelfSup)
    learning_rate: Any = None  # None: backend default (sklearn: 200 as MMSelfSup), or "auto"
    early_exaggeration: float = 12.0
    init: str | None = None  # random | pca (backend default)
    pca_dims: Any = "auto"  # PCA pre-reduction: int, null (off) or "auto"
    n_jobs: int = -1
    cache: bool = True
    cache_dir: str | None = None  # default: $SELFSUP_VIS_CACHE/features or ~/.cache/selfsup_vis
    replot: bool = False  # redraw from task.from_dir's saved coordinates, no recomputation
    from_dir: str | None = None
    formats: list[str] = field(default_factory=lambda: ["png"])
    projector: bool = True  # TensorBoard projector (when logger has tensorboard) / W&B table
    projector_max_samples: int = 2000
    sprite_size: int = 32


@dataclass
class Config:
    """Root: one entry per config group plus run-wide knobs."""

    task: Any = MISSING
    model: Any = MISSING
    dataset: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    log_level: str = "INFO"


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/dataset", name="synthetic", node=SyntheticDataConfig)
    cs.store(group="schema/dataset", name="image_folder", node=ImageFolderDataConfig)
    cs.store(group="schema/dataset", name="imagenet", node=ImageNetDataConfig)
    cs.store(group="schema/dataset", name="cue_conflict", node=CueConflictDataConfig)
    cs.store(group="schema/task", name="browse", node=BrowseTaskConfig)
    cs.store(group="schema/task", name="tsne", node=TsneTaskConfig)
    # The submitit plugin's own typed schemas, so that our launcher presets (which keep the
    # plugin's option names) stay typed while tying tasks/nodes to the trainer.
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

    cs.store(group="schema/launcher", name="submitit_slurm", node=SlurmQueueConf)
    cs.store(group="schema/launcher", name="submitit_local", node=LocalQueueConf)
