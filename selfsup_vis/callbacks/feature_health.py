"""FeatureHealth: catch representation collapse while training.

Two numbers on the features of a fixed validation subset: the std of the L2-normalised
features (mean over dimensions; about 1/sqrt(D) when healthy, 0 when every image maps to the
same direction — SimSiam's collapse monitor; also reported times sqrt(D)), and the effective
rank, exp of the entropy of the normalised singular values (RankMe; 1 = collapsed).

Measured on the representation each algorithm is evaluated with: the mean of the patch tokens
for MAE-style ViTs (MAE's loss never trains the CLS token, whose features stay near-constant in
a healthy model: a false alarm), the pooled backbone output for MoCo / CNNs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl

from selfsup_vis.callbacks.base import PeriodicCallback, batched_features, fixed_samples
from selfsup_vis.config.callbacks import FeatureHealthConfig
from selfsup_vis.config.defaults import takes_schema
from selfsup_vis.plotting.log import log_scalars

log = logging.getLogger(__name__)


def evaluated_representation(pl_module: pl.LightningModule, layer: str | None) -> tuple[str | None, str]:
    """The layer to measure (``None``: the module's own output) and how to name it: a given
    ``layer`` as is; else the model's default layer, token layers as the patch-token mean."""
    if layer:
        return layer, layer
    if not hasattr(pl_module, "default_layers"):
        return None, "the module's output"
    base = pl_module.default_layers()[0]
    if "." not in base and base in getattr(pl_module, "token_layers", ()):
        return f"{base}.mean", f"{base}.mean (mean of the patch tokens)"
    return base, f"{base} (pooled output)"


def feature_health(features: np.ndarray) -> dict[str, float]:
    """Collapse indicators of features (N, D)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_health needs (N >= 2, D) features, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("feature_health: features contain NaN or inf")
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    std = float(z.std(axis=0).mean())
    s = np.linalg.svd(x, compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    p = p[p > 0]
    erank = float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0
    d = x.shape[1]
    return {"feature_std": std, "feature_std_x_sqrt_dim": std * float(np.sqrt(d)),
            "effective_rank": erank, "effective_rank_ratio": erank / min(x.shape)}


@takes_schema(FeatureHealthConfig)
class FeatureHealth(PeriodicCallback):
    """Logs ``health/<layer>/{feature_std, feature_std_x_sqrt_dim, effective_rank,
    effective_rank_ratio}`` every ``every_n_epochs`` / ``every_n_steps`` on ``num_samples``
    fixed validation images; warns when the features look collapsed."""

    subdir = "health"

    def __init__(self, *, every_n_steps: int | None, every_n_epochs: int | None, min_interval_s: float,
                 num_samples: int, layer: str | None, seed: int, batch_size: int, at_train_end: bool,
                 collapse_threshold: float, dirpath: str | None, formats: Sequence[str]) -> None:
        super().__init__(every_n_steps, every_n_epochs, min_interval_s, at_train_end, dirpath, formats)
        self.num_samples, self.layer, self.seed, self.batch_size = num_samples, layer, seed, batch_size
        self.collapse_threshold = collapse_threshold
        self._fixed = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fixed is None:
            self._fixed = fixed_samples(trainer, self.num_samples, self.seed)
        chosen, described = evaluated_representation(pl_module, self.layer)
        feats, layer = batched_features(pl_module, self._fixed["images"], chosen, self.batch_size)
        stats = feature_health(feats)
        self.history.append((trainer.global_step, stats))
        log_scalars(trainer.loggers, {f"health/{layer}/{k}": v for k, v in stats.items()},
                    step=trainer.global_step)
        if stats["feature_std_x_sqrt_dim"] < self.collapse_threshold or stats["effective_rank"] < 1.5:
            log.warning("FeatureHealth: features of %s look collapsed at step %d (std x sqrt(D) %.3f, "
                        "effective rank %.2f)", described, trainer.global_step,
                        stats["feature_std_x_sqrt_dim"], stats["effective_rank"])
