"""2-D embeddings of features (openTSNE, sklearn t-SNE, PCA, UMAP) and their quality numbers."""

from selfsup_vis.embedding.backends import (
    BACKENDS,
    EmbeddingResult,
    EmbedParams,
    compute_embedding,
    embed,
)
from selfsup_vis.embedding.quality import embedding_quality

__all__ = [
    "BACKENDS",
    "EmbedParams",
    "EmbeddingResult",
    "compute_embedding",
    "embed",
    "embedding_quality",
]
