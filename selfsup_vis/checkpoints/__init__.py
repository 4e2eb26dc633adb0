"""Checkpoint loading (safe, cached, converted, reported) and export."""

from selfsup_vis.checkpoints.export import export_checkpoint, save_checkpoint
from selfsup_vis.checkpoints.loading import (
                                             CheckpointError,
                                             LoadReport,
                                             load_checkpoint,
                                             resolve_checkpoint,
                                             safe_load,
)

__all__ = ["CheckpointError", "LoadReport", "export_checkpoint", "load_checkpoint",
           "resolve_checkpoint", "safe_load", "save_checkpoint"]
