"""Lightning callbacks: reconstructions, embedding snapshots and feature health during training.

Each is a plain ``pytorch_lightning.Callback`` usable in any training (configured in
``conf/callbacks/``); the drawing ones skip sanity checking, draw on rank zero only and turn a
drawing error into a warning.
"""

from selfsup_vis.callbacks.attention import AttentionSnapshot
from selfsup_vis.callbacks.dense import DenseSnapshot
from selfsup_vis.callbacks.embedding import EmbeddingSnapshot
from selfsup_vis.callbacks.feature_health import FeatureHealth, feature_health
from selfsup_vis.callbacks.reconstruction import ReconstructionDump
from selfsup_vis.callbacks.training_stats import TrainingStats

__all__ = ["AttentionSnapshot", "DenseSnapshot", "EmbeddingSnapshot", "FeatureHealth", "ReconstructionDump", "TrainingStats", "feature_health"]
