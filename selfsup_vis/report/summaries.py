"""What each task writes into ``summary.json``: one dataclass per task.

The fields are the JSON keys, in the order users' scripts already read them; ``headline()``
names the few numbers that say how the run went. ``TaskRun.write_summary`` serialises a
summary with its headline (``"headline": {name: number}``) and fills ``task``, ``status``,
``created`` and the provenance itself. The sweep tables (``report/sweep.py``), report.html
and the loggers' hparam metrics read that headline (``report/headline.py``), so a task added
later only has to say here which of its numbers matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

#: the one k of every kNN number shown: figures, headline, layer ranking, report.html
from selfsup_vis.embedding.quality import HEADLINE_K

#: per-layer quality numbers every embedding headline carries (those of the run's labeling,
#: ``task.color_by``; a numeric labeling has the kNN-regression R² instead of accuracy)
KNN_KEYS = (f"knn_feat@{HEADLINE_K}", f"knn_2d@{HEADLINE_K}", f"knn_feat_r2@{HEADLINE_K}",
            f"knn_2d_r2@{HEADLINE_K}", "trustworthiness")


def _num(x: Any) -> float | None:
    return None if isinstance(x, bool) or not isinstance(x, int | float) else float(x)


def _named(suffix: str, values: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """``{f"{key}/{suffix}": number}`` for the numeric ``keys`` of ``values`` (NaN kept)."""
    return {f"{k}/{suffix}": v for k in keys if (v := _num(values.get(k))) is not None}


@dataclass
class TaskSummary:
    """Base of every task's summary. A field with ``metadata={"omit_if_none": True}`` is left
    out of the JSON while it is None (keys that only some runs have)."""

    def headline(self) -> dict[str, float]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if not (getattr(self, f.name) is None and f.metadata.get("omit_if_none"))}
        out["headline"] = self.headline()
        return out


def layer_headline(layers: Mapping[str, Any]) -> dict[str, float]:
    """``knn_feat@20/<layer>``, ``knn_2d@20/<layer>``, ``trustworthiness/<layer>``."""
    out: dict[str, float] = {}
    for layer, info in layers.items():
        out.update(_named(layer, info.get("quality", {}), KNN_KEYS))
    return out


@dataclass
class TsneSummary(TaskSummary):
    """task=tsne on a dataset: per layer its quality numbers, embedding parameters and files."""

    model: str
    checkpoint: str | None
    dataset: str
    split: str
    n_samples: int
    classes: list[str]
    seed: int
    space: str  # the space of the embedding and of every number
    metric: str
    standardize: bool
    color_by: str  # the labeling every number, ranking, headline, map and file is about
    method: dict[str, Any]  # how the maps were made (t-SNE/UMAP/PCA, backend, perplexity, ...)
    labelings: dict[str, Any]  # every labeling by name: its classes and each layer's numbers
    feature_cache: str
    exports: dict[str, Any]
    skipped_corrupt: list[dict[str, Any]]
    decode: dict[str, str] | None  # dataset.decode: where JPEGs were decoded, and why
    timings: dict[str, float]
    layers: dict[str, Any]
    ranking: list[dict[str, Any]]
    #: cue-conflict stimuli: which neighbours leave-one-out kNN does not count, and why
    knn_exclusion: str | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        return layer_headline(self.layers)


@dataclass
class TsneFeaturesSummary(TaskSummary):
    """task=tsne on precomputed features (``task.features``): one map, no model."""

    model: str
    features: str
    feature_files: list[str]
    labels_file: str | None
    n_samples: int
    feature_dim: int
    classes: list[str]
    seed: int
    space: str
    method: dict[str, Any]  # how the map was made (t-SNE/UMAP/PCA, backend, perplexity, ...)
    metric: str
    standardize: bool
    projector: dict[str, Any] | None
    timings: dict[str, float]
    layers: dict[str, Any]
    knn_exclusion: str | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        return layer_headline(self.layers)


@dataclass
class CompareSummary(TaskSummary):
    """task=compare_embeddings: per model its layers' quality, Procrustes residuals, CKA."""

    dataset: str
    split: str
    n_samples: int
    classes: list[str]
    seed: int
    space: str
    metric: str
    standardize: bool
    color_by: str
    labelings: dict[str, Any]
    initialisation: str
    alignment: str
    models: list[dict[str, Any]]
    quality: dict[str, dict[str, Any]]
    procrustes_rms: dict[str, dict[str, float]]
    cka: dict[str, Any]
    timings: dict[str, float]
    files: list[str]
    method: dict[str, Any] | None = field(default=None, metadata={"omit_if_none": True})
    knn_exclusion: str | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        """Each model's panel layer (the map shown side by side): kNN@20 in feature space and
        in 2-D, trustworthiness, as ``<metric>/<model>``."""
        out: dict[str, float] = {}
        for m in self.models:
            out.update(_named(m["name"], self.quality.get(m["name"], {}).get(m["panel_layer"], {}), KNN_KEYS))
        return out


@dataclass
class AttentionSummary(TaskSummary):
    """task=attention: per method and layer the maps' files and, with object masks, the
    pointing game next to a random map's and a centred blob's."""

    model: str
    checkpoint: str | None
    method: str
    images: list[str]
    images_file: str
    source: dict[str, Any]
    results: dict[str, Any]
    pointing_game: dict[str, Any] | str
    config: dict[str, Any]

    def headline(self) -> dict[str, float]:
        """``pointing_accuracy/<method@layer>`` and ``energy_inside/<method@layer>`` of the
        scored panel (none without object masks: there is nothing to score)."""
        out: dict[str, float] = {}
        for key, entry in self.results.items():
            out.update(_named(key, entry.get("score") or {}, ("pointing_accuracy", "energy_inside")))
        return out


@dataclass
class ShapeBiasSummary(TaskSummary):
    """task=shape_bias: the model-vs-human numbers of one classifier."""

    model: str
    dataset: str
    split: str
    decision_mapping: str
    categories: list[str]
    preprocessing: str | None
    shape_bias: float
    shape_bias_per_category: dict[str, float]
    shape_accuracy: float
    texture_accuracy: float
    accuracy: float
    counts: dict[str, int]
    trained_in_process: dict[str, Any] | None
    files: dict[str, Any] | None = field(default=None, metadata={"omit_if_none": True})
    reference: dict[str, float] | None = field(default=None, metadata={"omit_if_none": True})
    #: RANDOM WEIGHTS / degenerate-classifier warnings (also on the figure and in the log)
    flags: list[str] | None = field(default=None, metadata={"omit_if_none": True})
    error_consistency: dict[str, Any] | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        kappa = _num((self.error_consistency or {}).get("error_consistency_mean"))
        return {"shape_bias": self.shape_bias,
                **({"error_consistency": kappa} if kappa is not None else {})}


@dataclass
class PlotShapeBiasSummary(TaskSummary):
    """task=plot_shape_bias: every model (and humans) read from the CSVs."""

    csv_dirs: list[str]
    categories: list[str]
    models: dict[str, dict[str, Any]]
    icons: bool
    files: list[str]
    humans_mean_of_subjects: float | None = field(default=None, metadata={"omit_if_none": True})
    error_consistency: dict[str, Any] | None = field(default=None, metadata={"omit_if_none": True})
    warnings: dict[str, list[str]] | None = field(default=None, metadata={"omit_if_none": True})
    weights: str | None = field(default=None, metadata={"omit_if_none": True})
    provenance: dict[str, Any] | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        return {f"shape_bias/{name}": v for name, info in self.models.items()
                if (v := _num(info.get("shape_bias"))) is not None}


@runtime_checkable
class SummaryContributor(Protocol):
    """A training callback whose record over the run belongs in the pretrain summary:
    ``summary_fields()`` returns :class:`PretrainSummary` fields by name (e.g. the
    reconstruction error at each snapshot). The task asks every callback, naming none."""

    def summary_fields(self) -> dict[str, Any]: ...


@dataclass
class PretrainSummary(TaskSummary):
    """task=pretrain: where training ended and what it saved."""

    model: str
    algorithm: str
    dataset: str
    train_split: str
    pipeline: str
    resumed_from: dict[str, Any] | None
    epochs: int
    global_step: int
    fit_seconds: float
    final_metrics: dict[str, float]
    checkpoints: dict[str, Any]
    callbacks: list[str]
    callback_failures: list[Any]
    optim: dict[str, Any]
    reconstruction_error: list[dict[str, float]] | None = field(default=None, metadata={"omit_if_none": True})

    def headline(self) -> dict[str, float]:
        out: dict[str, float] = {}
        loss = next((v for k in ("train/loss", "train/loss_epoch", "loss")
                     if (v := _num(self.final_metrics.get(k))) is not None), None)
        if loss is not None:
            out["final_loss"] = loss
        if self.reconstruction_error and (v := _num(self.reconstruction_error[-1].get("error"))) is not None:
            out["reconstruction_error"] = v
        return out


@dataclass
class SweepSummary(TaskSummary):
    """task=summarize: one row per job of a sweep (``report/sweep.py`` writes the tables)."""

    sweep_dir: str
    n_jobs: int
    counts: dict[str, int]
    swept_keys: list[str]
    columns: list[str]
    jobs: list[dict[str, Any]]
    figures: list[str]
    files: list[str]
    created: str
    report: str

    def headline(self) -> dict[str, float]:
        failed = sum(v for k, v in self.counts.items() if k != "done")
        return {"jobs": float(self.n_jobs), "jobs_not_done": float(failed)}
