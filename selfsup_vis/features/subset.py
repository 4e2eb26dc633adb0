"""Which samples of a dataset are embedded: the seeded, class-balanced subset of ``task=tsne``
and ``task=compare_embeddings`` (``config.schemas.SubsetConfig``).

Both tasks select through :meth:`Subset.select`, so the same settings give the same samples
and so the same feature-cache entries. With ``dataset.skip_corrupt=true`` the images that do
not decode are dropped here, before any extraction, and listed in the subset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfsup_vis.data.folders import unreadable_images
from selfsup_vis.utils.io import save_npy, write_text

log = logging.getLogger(__name__)


def select_indices(labels: np.ndarray, n_classes: int, max_num_class: int | None,
                   class_idx: list[int] | None, max_samples_per_class: int | None,
                   sampling: str, seed: int) -> np.ndarray:
    """Sorted dataset indices: the first ``max_num_class`` classes (or ``class_idx``), at most
    ``max_samples_per_class`` each (seeded random or first-N)."""
    labels = np.asarray(labels)
    if class_idx:
        bad = [c for c in class_idx if not 0 <= c < n_classes]
        if bad:
            raise ValueError(f"task.class_idx {bad} out of range: the dataset has {n_classes} classes (0..{n_classes - 1})")
        chosen = list(dict.fromkeys(class_idx))
    else:
        chosen = list(range(min(max_num_class or n_classes, n_classes)))
    rng = np.random.default_rng(seed)
    picked = []
    for c in chosen:
        members = np.flatnonzero(labels == c)
        if max_samples_per_class and members.size > max_samples_per_class:
            if sampling == "random":
                members = rng.choice(members, max_samples_per_class, replace=False)
            else:
                members = members[:max_samples_per_class]
        picked.append(members)
    indices = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    if indices.size == 0:
        raise ValueError(f"t-SNE subset is empty (classes {chosen[:10]} have no samples)")
    return indices


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


@dataclass(frozen=True)
class Subset:
    """The selected samples: dataset ``indices`` (sorted), their ``labels`` and relative
    ``names``, the dataset's ``classes``, and the unreadable images left out (``skipped``)."""

    dataset: str
    split: str
    indices: np.ndarray
    labels: np.ndarray
    names: list[str]
    classes: list[str]
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.indices.size)

    def write(self, out: Path) -> None:
        """``labels.npy`` and ``paths.txt``: the row order of every per-sample file of a run."""
        save_npy(out / "labels.npy", self.labels)
        write_text(out / "paths.txt", "".join(f"{n}\n" for n in self.names))

    @classmethod
    def select(cls, data: Any, spec: Any, *, dataset: str, split: str) -> Subset:
        """The subset of ``data`` (an ``ImageDataset``) that ``spec`` (a node with the fields
        of ``SubsetConfig``) asks for, readable images only when ``data.skip_corrupt``."""
        all_labels = np.asarray(data.labels)
        indices = select_indices(all_labels, len(data.classes), spec.max_num_class,
                                 list(spec.class_idx) if spec.class_idx else None,
                                 spec.max_samples_per_class, str(_value(spec.sampling)), int(spec.seed))
        skipped: list[dict[str, Any]] = []
        if getattr(data, "skip_corrupt", False):  # drop unreadable images before extraction
            log.info("checking that the %d images decode (dataset.skip_corrupt=true) ...", indices.size)
            skipped = unreadable_images(data, indices)
            if skipped:
                log.warning("dataset.skip_corrupt=true: leaving out %d unreadable image(s): %s",
                            len(skipped), "; ".join(s["error"] for s in skipped[:5]))
                indices = np.setdiff1d(indices, [s["index"] for s in skipped])
                if indices.size == 0:
                    raise ValueError("t-SNE subset is empty: every selected image is unreadable "
                                     "(dataset.skip_corrupt=true skipped them all)")
        labels = all_labels[indices]
        sub = cls(dataset, split, indices, labels, [data.names[i] for i in indices], list(data.classes), skipped)
        log.info("subset: %d samples of %d classes from %s/%s", sub.n, np.unique(labels).size, dataset, split)
        return sub
