"""Raw pixels as features: the baseline every learned representation should beat.

Each image goes through the model's eval pipeline (same crop and normalisation as the model
sees) and is area-downsampled to ``size``² so that the width stays comparable to a backbone's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

PIXELS = "pixels"


def pixel_features(dataset: Any, indices: Sequence[int], pipeline: Callable[[Any], dict[str, Any]],
                   size: int = 32, batch_size: int = 64) -> np.ndarray:
    """(len(indices), 3·size²) float32: ``pipeline(dataset.load_image(i))['image']`` area-pooled."""
    out = np.empty((len(indices), 3 * size * size), dtype=np.float32)
    for s in range(0, len(indices), batch_size):
        batch = torch.stack([pipeline(dataset.load_image(int(i)))["image"] for i in indices[s : s + batch_size]])
        pooled = F.adaptive_avg_pool2d(batch.float(), (size, size))
        out[s : s + len(batch)] = pooled.reshape(len(batch), -1).numpy()
    return out
