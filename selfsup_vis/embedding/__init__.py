"""2-D embeddings of features (openTSNE, sklearn t-SNE, PCA, UMAP), their quality numbers and
one typed map per layer (``layer_maps``): what the tasks and callbacks use of this package."""

from selfsup_vis.embedding.backends import (
    BACKENDS,
    EmbeddingResult,
    EmbedParams,
    compute_embedding,
)
from selfsup_vis.embedding.labels import (
    Labeling,
    footer_text,
    labeling_numbers,
    labeling_values,
    parse_labeling_specs,
    quality_for,
    resolve_labelings,
    scoring,
    stimulus_sources,
    write_labels,
)
from selfsup_vis.embedding.layer_maps import (
    EarlierRun,
    LayerMap,
    grid_figure,
    layer_figure,
    map_features,
    map_layer,
    rank_layers,
    write_layer_map,
)
from selfsup_vis.embedding.quality import embedding_quality

__all__ = [
    "BACKENDS",
    "EarlierRun",
    "EmbedParams",
    "EmbeddingResult",
    "Labeling",
    "LayerMap",
    "compute_embedding",
    "embedding_quality",
    "footer_text",
    "grid_figure",
    "labeling_numbers",
    "labeling_values",
    "layer_figure",
    "map_features",
    "map_layer",
    "parse_labeling_specs",
    "quality_for",
    "rank_layers",
    "resolve_labelings",
    "scoring",
    "stimulus_sources",
    "write_labels",
    "write_layer_map",
]
