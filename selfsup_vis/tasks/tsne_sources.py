"""task=tsne from other sources than a model on a dataset: the maps of an earlier run redrawn
(``task.replot=true task.from_dir=<run>``), or features the user already has
(``task.features=<.npy | folder of shards>``: no data, model or extraction)."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from selfsup_vis.checkpoints.provenance import Provenance
from selfsup_vis.embedding import (
    EarlierRun,
    EmbedParams,
    map_features,
    stimulus_sources,
    write_layer_map,
)
from selfsup_vis.embedding.labels import SOURCE_EXCLUSION
from selfsup_vis.embedding.plots import plot_embedding
from selfsup_vis.features.external import FeatureShards, load_labels
from selfsup_vis.features.extraction import layer_file_name
from selfsup_vis.report.exports import export_projector, projector_rows
from selfsup_vis.report.summaries import TsneFeaturesSummary
from selfsup_vis.tasks.common import TaskRun, phase
from selfsup_vis.utils.io import save_npy

log = logging.getLogger(__name__)


def replot(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    """Redraw the figures of an earlier run from its saved coordinates (no recomputation);
    the summary is the earlier one with ``replotted_from``."""
    earlier = EarlierRun.read(cfg.task.from_dir)
    run.set_provenance(earlier.provenance)
    for layer, fig in earlier.figures():
        if layer:
            run.figure(fig, f"tsne_{layer_file_name(layer)}", f"tsne/{layer}", provenance_layer=layer)
        else:
            run.figure(fig, "tsne_grid", "tsne/grid")
    return run.write_summary({**earlier.summary, "replotted_from": str(earlier.path)})


def embed_precomputed(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    """``task.features``: embed → quality → figure → summary on features the user already
    has. They are memory-mapped and, from ``task.large_n`` rows on, read in chunks and never
    copied whole."""
    t = cfg.task
    feats = FeatureShards(t.features)  # shapes, dtypes and lengths are checked before any work
    n = len(feats)
    classes = t.classes if t.classes is None or isinstance(t.classes, str) else [str(c) for c in t.classes]
    lab = load_labels(t.labels, n, classes=classes, paths=t.paths)
    labels = lab.labels if lab.source is not None else None
    names = lab.paths or [str(i) for i in range(n)]
    layer = feats.source.stem if feats.source.is_file() else feats.source.name
    run.set_provenance(Provenance(
        task="tsne", model="precomputed features", weights=f"features {feats.source}", layer=layer,
        seed=int(t.seed), dataset=str(lab.source) if lab.source else "unlabelled", n=n,
        sources=[str(feats.source)] + ([str(lab.source)] if lab.source else [])))
    params = EmbedParams.from_config(t, init=t.init)
    log.info("task.features: %s (%d×%d, %.2f GB on disk), %s path", feats, n, feats.dim, feats.nbytes_on_disk / 1e9,
             "memory-bounded" if params.large_n is not None and n >= params.large_n else "in-memory")
    groups = stimulus_sources(lab.paths) if lab.paths else None  # cue-conflict: same-source neighbours out
    m = map_features(layer, feats, labels, params, source=str(feats.source), quality_sample=int(t.quality_sample),
                     optimised_rows_file=run.dir / "optimised_rows.npy", phase=phase, exclude_groups=groups,
                     exclusion_note=SOURCE_EXCLUSION if groups is not None else None)
    with phase("coordinates (.npy, .csv)"):
        files = write_layer_map(run.dir, layer, m.coords, lab.labels, names, lab.classes)
    sub = m.quality.get("quality_subsample")
    title = f"{layer} · n={n}" + (f" · quality on {sub['n']} sampled" if sub and sub["n"] < n else "")
    fig = plot_embedding(m.coords, labels, lab.classes, title, m.quality, density=t.density,
                         footer=m.method + (f"\n{m.note}" if m.note else ""))
    files += run.figure(fig, f"tsne_{m.file_name}", f"tsne/{layer}")
    run.scalars({f"tsne/{layer}/{k}": v for k, v in m.quality.items()})
    projector = None
    if t.projector:
        pick = projector_rows(n, int(t.projector_max_samples), int(t.seed))
        save_npy(run.dir / "projector_sample.npy", pick)
        projector = {"n": int(pick.size), "of": n, "seed": int(t.seed), "rows_file": str(run.dir / "projector_sample.npy")}
        with phase("exporting a sample to the projector"):
            export_projector(run.loggers, pick, {layer: feats}, {layer: m.coords}, lab.labels, names, lab.classes,
                             sprite_size=int(t.sprite_size))
    summary = TsneFeaturesSummary(
        model="precomputed features", features=str(feats.source), feature_files=[str(sh.path) for sh in feats.shards],
        labels_file=str(lab.source) if lab.source else None, n_samples=n, feature_dim=feats.dim,
        classes=lab.classes, seed=int(t.seed), space=m.params["space"], method=m.params["description"],
        knn_exclusion=m.quality.get("knn_exclusion"), metric=params.metric,
        standardize=params.standardize, projector=projector, timings={"embedding_s": m.seconds},
        layers={layer: m.summary(files)})
    return run.write_summary(summary)
