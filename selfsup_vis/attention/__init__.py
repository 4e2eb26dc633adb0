"""Where a model looks: ViT CLS attention per head and attention rollout, class activation maps
(the ``grad-cam`` package) for classifiers and class-agnostic maps for any backbone, scored by
a pointing game where object masks are known. Shared by ``task=attention`` and the
``AttentionSnapshot`` callback."""

from selfsup_vis.attention.compute import MapResult, MapSpec, Target, compute_maps, resolve_targets
from selfsup_vis.attention.metric import PointingGame, area_fraction, energy_inside, pointing_hits

__all__ = ["MapResult", "MapSpec", "PointingGame", "Target", "area_fraction", "compute_maps",
           "energy_inside", "pointing_hits", "resolve_targets"]
