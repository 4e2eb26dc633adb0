"""task=tsne: per-layer features → 2-D maps, quality numbers, figures and exports.

subset of the dataset (seeded, ``features/subset.py``) → model → provenance → features
(Trainer.predict, streamed, DDP-exact, cached, checked finite: ``features/pipeline.py``) → one
map per layer (``embedding/layer_maps.py``: openTSNE / sklearn / PCA / UMAP + quality numbers,
coordinates) → figures → exports (report thumbnails, Embedding Atlas, TensorBoard projector,
W&B tables: ``report/exports.py``) → summary. ``task.replot`` and ``task.features`` (maps of an
earlier run, or of features the user already has) are in ``tasks/tsne_sources.py``.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig
from tqdm.auto import tqdm

from selfsup_vis.embedding import (
    EmbedParams,
    Labeling,
    LayerMap,
    grid_figure,
    labeling_numbers,
    layer_figure,
    map_layer,
    parse_labeling_specs,
    rank_layers,
    resolve_labelings,
    scoring,
    write_labels,
    write_layer_map,
)
from selfsup_vis.features.pipeline import FeatureSet, subset_features
from selfsup_vis.features.subset import Subset
from selfsup_vis.models import build_model
from selfsup_vis.report.exports import export_projector, projector_rows, write_embedding_exports
from selfsup_vis.report.summaries import TsneSummary
from selfsup_vis.tasks.common import TaskRun, build_trainer, phase
from selfsup_vis.tasks.tsne_sources import embed_precomputed, replot


def run(cfg: DictConfig, run: TaskRun) -> dict[str, Any]:
    t = cfg.task
    if t.replot:
        return replot(cfg, run)
    if t.features:
        return embed_precomputed(cfg, run)
    label_specs = parse_labeling_specs(str(t.color_by), list(t.extra_labels))  # checked before work
    split = t.split or cfg.dataset.eval_split
    dm = hydra.utils.instantiate(cfg.dataset, eval_split=split)
    data = dm.dataset(split)
    subset = Subset.select(data, t, dataset=dm.name, split=split)
    colour, labelings = resolve_labelings(label_specs, subset.names, subset.labels, subset.classes)

    # layers, pooling and final norm go through the constructor, which validates them; a
    # checkpoint without the requested layers' weights (a MoCo neck) is refused before work
    model = build_model(cfg.model, predict_layers=list(t.layers) or None, pooling=t.pooling,
                        final_norm_blocks=bool(t.final_norm))
    layers = list(model.predict_layers)
    run.model_provenance(model, cfg.model, layers=layers, layer=", ".join(layers), seed=int(t.seed),
                         dataset=dm.name, split=split, n=subset.n)
    features = subset_features(
        model, cfg.model, cfg.dataset, cfg.trainer, dm, data, subset, layers=layers, init_seed=int(cfg.seed),
        final_norm=bool(t.final_norm), cache=bool(t.cache), cache_dir=t.cache_dir, private_dir=run.dir,
        features_dir=run.dir / "features", work_dir=run.dir / "_extract",
        make_trainer=lambda cbs: build_trainer(cfg, None, cbs, enable_checkpointing=False))
    if features is None:  # not rank zero: the maps are drawn on rank zero only
        return {}
    subset.write(run.dir)
    write_labels(run.dir, colour, subset.labels)  # labels.npy: the colour labeling's

    params = EmbedParams.from_config(t, init=t.init)
    score, (codes, classes) = scoring(colour, labelings, subset.names), colour.categorical()
    maps: list[LayerMap] = []
    layer_summaries: dict[str, Any] = {}
    for layer in tqdm(layers, desc="embedding layers", unit="layer", disable=len(layers) < 2):
        m = map_layer(layer, features.array(layer), params=params, owner=model.model_name,
                      quality_sample=int(t.quality_sample), phase=phase, **score)
        files = write_layer_map(run.dir, layer, m.coords, codes, subset.names, classes, labelings)
        fig = layer_figure(m, colour, f"{model.model_name} · {layer}", indices=subset.indices,
                           load_image=data.load_image if t.thumbnails else None,
                           thumbnail_grid=int(t.thumbnail_grid), thumbnail_size=int(t.thumbnail_size))
        files += run.figure(fig, f"tsne_{m.file_name}", f"tsne/{layer}", provenance_layer=layer)
        run.scalars({f"tsne/{layer}/{k}": v for k, v in m.quality.items()})
        maps.append(m)
        layer_summaries[layer] = m.summary(files)
    run.figure(grid_figure(maps, colour), "tsne_grid", "tsne/grid")
    exports = _exports(t, run, data, subset, features, maps, colour)

    summary = TsneSummary(
        model=model.model_name, checkpoint=cfg.model.get("checkpoint"), dataset=dm.name, split=split,
        n_samples=subset.n, classes=subset.classes, seed=int(t.seed), space=maps[0].params["space"],
        metric=params.metric, standardize=params.standardize, color_by=colour.name,
        method=maps[0].params["description"], knn_exclusion=score["exclusion_note"],
        labelings=labeling_numbers(colour, labelings, {m.layer: m.quality for m in maps}),
        feature_cache=str(features.cache_dir), exports=exports, skipped_corrupt=subset.skipped,
        decode=dm.gpu_decode.used,
        timings={"extraction_s": features.extraction_s, "embedding_s": sum(m.seconds for m in maps)},
        layers=layer_summaries, ranking=rank_layers(maps))
    return run.write_summary(summary)


def _exports(t: DictConfig, run: TaskRun, data: Any, subset: Subset, features: FeatureSet,
             maps: list[LayerMap], colour: Labeling) -> dict[str, Any]:
    """A seeded sample to the TensorBoard projector / W&B tables; report thumbnails and the
    requested ``task.export`` files, all labelled by ``colour``. Returns the files for the summary."""
    coords = {m.layer: m.coords for m in maps}
    codes, classes = colour.categorical()
    arrays = {la: features.array(la) for la in features.layers}
    if t.projector:
        with phase("exporting embeddings to the projector"):
            export_projector(run.loggers, projector_rows(subset.n, int(t.projector_max_samples), int(t.seed)),
                             arrays, coords, codes, subset.names, classes,
                             sprite_size=int(t.sprite_size), load_image=data.load_image,
                             image_indices=subset.indices)
    with phase("thumbnails for report.html" + (f" and exports {list(t.export)}" if t.export else "")):
        return write_embedding_exports(  # report hover thumbnails, Embedding Atlas parquet
            run.dir, data.load_image, subset.indices, codes, subset.names, classes, coords,
            arrays, [str(e) for e in t.export], int(t.report_thumbnails), int(t.thumbnail_size),
            int(t.atlas_neighbors), int(t.seed))
