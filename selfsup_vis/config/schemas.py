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


#: pooling of token layers (ViT): the cls token, the mean of the patch tokens (``gap`` is the
#: same, mmpretrain's name), or both concatenated; feature maps (CNN, Swin) only take ``gap``.
#: (Functional API: ``cls+mean`` is a member name, so OmegaConf accepts it at compose time.)
Pooling = StrEnum("Pooling", {"cls": "cls", "mean": "mean", "cls+mean": "cls+mean", "gap": "gap",
                              "reg": "reg"})  # reg: mean of register / storage tokens


class FigureFormat(StrEnum):
    """File formats a figure can be saved in (matplotlib's savefig)."""

    png = "png"
    pdf = "pdf"
    svg = "svg"
    svgz = "svgz"
    eps = "eps"
    ps = "ps"
    jpg = "jpg"
    jpeg = "jpeg"
    tif = "tif"
    tiff = "tiff"
    webp = "webp"


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
    batch_size: int = field(default=32, metadata={"min": 1})
    num_workers: int = field(default=0, metadata={"min": 0})
    pin_memory: bool = False
    train_split: str = "train"  # synthetic: train | val | conflict | shape_only | texture_only
    eval_split: str = "val"
    # feature extraction: auto = JPEG decode + resize on the GPU when the trainer is on CUDA and
    # the dataset is image files (per-file CPU fallback); cpu = PIL in the workers; gpu = refuse
    # unless possible (selfsup_vis.data.gpu_decode)
    decode: str = "auto"


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "selfsup_vis.data.datamodule.SyntheticDataModule"
    name: str = "synthetic"
    num_classes: int = field(default=8, metadata={"min": 1})
    image_size: int = field(default=64, metadata={"min": 8})
    samples_per_class: int = field(default=64, metadata={"min": 1})
    val_samples_per_class: int = field(default=16, metadata={"min": 1})
    conflict_per_pair: int = 1
    seed: int = field(default=0, metadata={"min": 0})


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
class TaskConfig:
    """What every task takes (each task's schema derives from this one)."""

    # a run directory holds one run (selfsup_vis/launch/rerun.py): a rerun into the directory of
    # a finished run is refused unless this is true; it then first removes every file that run's
    # manifest.json lists (outputs, logger folders, checkpoints; feature caches stay). An
    # unfinished run there (requeued, interrupted, failed) is resumed either way.
    overwrite: bool = False


@dataclass
class BrowseTaskConfig(TaskConfig):
    _target_: str = "selfsup_vis.tasks.browse.run"
    name: str = "browse"
    n_samples: int = field(default=8, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
    phase: Phase = Phase.train
    pipeline: Pipeline | None = None  # default: the model's training pipeline
    split: str | None = None  # default: dataset.train_split / eval_split by phase
    skip_type: list[str] = field(default_factory=list)
    show: bool = False
    show_interval: float = field(default=2.0, metadata={"min": 0})
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.png])


class EmbeddingBackend(StrEnum):
    auto = "auto"  # torch on CUDA, else openTSNE when installed, else sklearn
    opentsne = "opentsne"
    sklearn = "sklearn"
    pca = "pca"
    umap = "umap"
    torch = "torch"  # t-SNE in torch (GPU when available): embedding.tsne_torch


class Metric(StrEnum):
    """The feature space of embeddings and their quality numbers (selfsup_vis.embedding.space)."""

    cosine = "cosine"
    euclidean = "euclidean"


class Sampling(StrEnum):
    random = "random"
    first = "first"


class EmbeddingExport(StrEnum):
    atlas = "atlas"  # Embedding Atlas parquet (selfsup_vis/report/atlas.py)


@dataclass
class SubsetConfig:
    """Which samples are embedded (task=tsne and task=compare_embeddings: same settings, same
    samples, same feature-cache entries)."""

    split: str | None = None  # default: dataset.eval_split
    max_num_class: int | None = field(default=20, metadata={"min": 1})
    class_idx: list[int] | None = field(default=None, metadata={"min": 0})
    max_samples_per_class: int | None = field(default=None, metadata={"min": 1})
    sampling: Sampling = Sampling.random
    seed: int = field(default=0, metadata={"min": 0})


@dataclass
class EmbeddingConfig:
    """How features become a 2-D map and its numbers (shared by tsne and compare_embeddings)."""

    backend: EmbeddingBackend = EmbeddingBackend.auto
    perplexity: float = field(default=30.0, metadata={"gt": 0})
    # None: backend default (sklearn: 1000 as MMSelfSup)
    n_iter: int | None = field(default=None, metadata={"min": 1})
    learning_rate: Any = None  # None: backend default (sklearn: 200 as MMSelfSup), or "auto"
    early_exaggeration: float = field(default=12.0, metadata={"gt": 0})
    pca_dims: Any = "auto"  # PCA pre-reduction: int, null (off) or "auto"
    n_jobs: int = -1
    # the space (embedding, kNN and trustworthiness all use it) and the colouring
    metric: Metric = Metric.cosine  # cosine: L2-normalise first | euclidean: raw features
    standardize: bool = False  # z-score every feature dimension first
    color_by: str = "label"  # label | shape | texture | regex:<pattern> | csv:<file>:<column>
    cache: bool = True
    cache_dir: str | None = None  # default: $SELFSUP_VIS_CACHE/features or ~/.cache/selfsup_vis
    formats: list[FigureFormat] = field(default_factory=lambda: [FigureFormat.png])


@dataclass
class TsneTaskConfig(EmbeddingConfig, SubsetConfig, TaskConfig):
    _target_: str = "selfsup_vis.tasks.tsne.run"
    name: str = "tsne"
    layers: list[str] = field(default_factory=list)  # empty: the model's default layer(s)
    pooling: Pooling | None = None  # cls | mean | cls+mean | gap for token layers (model default)
    final_norm: bool = False  # ViTs: apply the encoder's final norm to block outputs too
    init: str | None = None  # random | pca (backend default)
    replot: bool = False  # redraw from task.from_dir's saved coordinates, no recomputation
    from_dir: str | None = None
    projector: bool = True  # TensorBoard projector (when logger has tensorboard) / W&B table
    projector_max_samples: int = field(default=2000, metadata={"min": 1})
    sprite_size: int = field(default=32, metadata={"min": 1})
    # report.html / exports: thumbnails are sampled into thumbnails.npz for the report
    export: list[EmbeddingExport] = field(default_factory=list)  # [atlas]
    report_thumbnails: int = field(default=1000, metadata={"min": 0})
    thumbnail_size: int = field(default=48, metadata={"min": 8})
    atlas_neighbors: int = field(default=15, metadata={"min": 1})
    # more labelings, thumbnails
    extra_labels: list[str] = field(default_factory=list)  # more labelings scored by kNN
    thumbnails: bool = False  # image thumbnails on the map (thumbnail_size px, one per grid cell)
    thumbnail_grid: int = field(default=20, metadata={"min": 1})
    # precomputed features (no data/model/extraction) and large N
    features: str | None = None  # a (N, D) .npy or a folder of .npy shards (memory-mapped)
    labels: str | None = None  # with task.features: a (N,) .npy or a CSV with label/class[/path]
    classes: Any = None  # with task.features: class names by label id (list or a text file)
    paths: str | None = None  # with task.features: a text file, one sample path per line
    large_n: int | None = field(default=100_000, metadata={"min": 0})  # memory-bounded path from N
    # large path: optimise a seeded sample of this many rows, place the rest (null: optimise all)
    embed_sample: int | None = field(default=250_000, metadata={"min": 1000})
    quality_sample: int = field(default=20_000, metadata={"min": 100})  # quality on a subsample above
    density: bool | None = None  # density image instead of points (null: above 300k points)


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
