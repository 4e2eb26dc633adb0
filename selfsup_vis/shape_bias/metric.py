"""``ShapeBias``: model-vs-human's shape bias as a torchmetrics ``Metric``.

Per image the metric keeps integer ids only (tensors are what DDP can gather): the decision,
the shape and texture category, the two stimulus numbers of the name
(``airplane1-bicycle2.png`` -> shape 0, 1, texture 2, 2) and the dataset index. All of them
are ``"cat"`` states; after the gather, rows are deduplicated by (index, name) so that the
duplicates a ``DistributedSampler`` pads with are not counted twice, and ordered by image
name, so a DDP run and a single-process run yield identical numbers and identical CSVs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from selfsup_vis.data.cue_conflict_categories import CATEGORIES, IMAGENET_INDICES, parse_stimulus
from selfsup_vis.utils.io import write_with

#: Column order of model-vs-human's raw-data CSVs.
CSV_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition",
               "imagename")
_PER_SAMPLE = ("decision", "shape", "texture", "shape_number", "texture_number", "index")


def write_rows_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write model-vs-human raw-data rows (``CSV_COLUMNS``) atomically."""
    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))  # \r\n, as published
            writer.writeheader()
            writer.writerows(rows)

    return write_with(path, _write)


def category_scores(logits: torch.Tensor, categories: tuple[str, ...] = CATEGORIES) -> torch.Tensor:
    """(B, 1000) logits -> (B, 16) mean softmax probability over each category's indices.

    This is model-vs-human's ``ImageNetProbabilitiesTo16ClassesMapping`` (aggregation: mean).
    """
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise ValueError(
            f"the ImageNet->16 decision mapping needs (batch, 1000) logits, got {tuple(logits.shape)}"
        )
    probs = torch.softmax(logits.float(), dim=1)
    return torch.stack([probs[:, list(IMAGENET_INDICES[c])].mean(dim=1) for c in categories], dim=1)


class ShapeBias(Metric):
    """Shape bias on cue-conflict images, exactly as model-vs-human computes it.

    Args:
        categories: category names; decisions, shapes and textures index into this list.
        decision_mapping: ``"imagenet"`` (``scores`` are 1000 ImageNet logits: softmax, mean
            probability over each category's ImageNet indices, argmax) or ``"identity"``
            (``scores`` already have one column per category: argmax).
        texture_categories: the texture word of each category when it differs from the
            category name (the synthetic set: class ``k`` has shape ``categories[k]`` and
            texture ``texture_categories[k]``).
        subject: the ``subj`` value written into the CSV rows (the model name).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        categories: Sequence[str] = CATEGORIES,
        decision_mapping: str = "imagenet",
        texture_categories: Sequence[str] | None = None,
        subject: str = "model",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if decision_mapping not in ("imagenet", "identity"):
            raise ValueError(
                f"decision_mapping must be 'imagenet' or 'identity', got {decision_mapping!r}"
            )
        self.categories = tuple(categories)
        if decision_mapping == "imagenet" and self.categories != CATEGORIES:
            raise ValueError("decision_mapping='imagenet' works on the 16 model-vs-human "
                             f"categories {list(CATEGORIES)}, got {list(self.categories)}")
        if texture_categories is not None and len(texture_categories) != len(self.categories):
            raise ValueError(f"texture_categories has {len(texture_categories)} names for "
                             f"{len(self.categories)} categories")
        self.texture_categories = tuple(texture_categories or self.categories)
        self.decision_mapping = decision_mapping
        self.subject = subject
        self._shape_ids = {c: i for i, c in enumerate(self.categories)}
        self._texture_ids = {c: i for i, c in enumerate(self.texture_categories)}
        self._extension = ""
        for name in _PER_SAMPLE:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("num_seen", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self._table: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ update
    def decide(self, scores: Tensor) -> Tensor:
        """Scores -> category decisions (long). 1-D integer scores are taken as decisions
        already made (-1 = no response, like model-vs-human's ``na``)."""
        if scores.ndim == 1 and not scores.is_floating_point():
            return scores.long()
        if self.decision_mapping == "imagenet":
            return category_scores(scores).argmax(dim=1)
        if scores.ndim != 2 or scores.shape[1] != len(self.categories):
            raise ValueError(f"identity decision mapping needs (batch, {len(self.categories)}) "
                             f"scores, got {tuple(scores.shape)}")
        return scores.argmax(dim=1)

    def update(
        self,
        scores: Tensor,
        image_names: Sequence[str] | None = None,
        *,
        index: Tensor | Sequence[int] | None = None,
        shape: Tensor | None = None,
        texture: Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            scores: (B, 1000) ImageNet logits, (B, K) category scores, or (B,) decisions.
            image_names: stimulus names (``[<folder>/]<shape><i>-<texture><j>.png``); shape and
                texture are read from them. Alternatively give ``shape`` and ``texture`` ids.
            index: unique dataset index per sample; duplicates (DDP padding) are merged by it.
        """
        decision = self.decide(scores).to(self.device)
        n = decision.shape[0]
        if image_names is not None:
            if len(image_names) != n:
                raise ValueError(f"{len(image_names)} image names for {n} scores")
            parsed = [parse_stimulus(name) for name in image_names]
            if parsed:
                self._extension = parsed[0].extension
            shape_ids = [self._category_id(self._shape_ids, p.shape, "shape", nm)
                         for p, nm in zip(parsed, image_names)]
            texture_ids = [self._category_id(self._texture_ids, p.texture, "texture", nm)
                           for p, nm in zip(parsed, image_names)]
            shape_t = torch.tensor(shape_ids, dtype=torch.long)
            texture_t = torch.tensor(texture_ids, dtype=torch.long)
            snum = torch.tensor([p.shape_number for p in parsed], dtype=torch.long)
            tnum = torch.tensor([p.texture_number for p in parsed], dtype=torch.long)
        elif shape is not None and texture is not None:
            shape_t, texture_t = torch.as_tensor(shape).long(), torch.as_tensor(texture).long()
            snum = torch.zeros(n, dtype=torch.long)
            tnum = torch.zeros(n, dtype=torch.long)
        else:
            raise ValueError("ShapeBias.update needs image_names, or both shape and texture ids")
        if shape_t.shape != (n,) or texture_t.shape != (n,):
            raise ValueError(f"shape/texture ids must have shape ({n},)")
        if index is None:  # a running counter keeps rows apart (DDP merging needs a real index)
            index_t = self.num_seen.cpu() + torch.arange(n)
        else:
            index_t = torch.as_tensor(index).long().reshape(-1)
            if index_t.shape != (n,):
                raise ValueError(f"index must have shape ({n},), got {tuple(index_t.shape)}")
        for name, value in zip(_PER_SAMPLE, (decision, shape_t, texture_t, snum, tnum, index_t)):
            getattr(self, name).append(value.to(self.device))
        self.num_seen += n
        self._table = None

    @staticmethod
    def _category_id(ids: dict[str, int], word: str, kind: str, image_name: str) -> int:
        if word not in ids:
            raise ValueError(f"image {image_name!r}: {kind} {word!r} is not one of the categories "
                             f"{sorted(ids)}")
        return ids[word]

    # ----------------------------------------------------------------- compute
    def _deduplicated(self) -> dict[str, np.ndarray]:
        """Per-sample states (synced when called from compute) without DDP duplicates,
        ordered by image name then index."""
        cols = {}
        for name in _PER_SAMPLE:
            value = getattr(self, name)
            if isinstance(value, list):
                value = dim_zero_cat(value) if value else torch.zeros(0)
            cols[name] = value.long().cpu().numpy().reshape(-1)
        names = [self._name(s, sn, t, tn) for s, sn, t, tn in zip(
            cols["shape"], cols["shape_number"], cols["texture"], cols["texture_number"])]
        seen: set[tuple[int, str]] = set()
        keep = []
        for i in sorted(range(len(names)), key=lambda i: (names[i], cols["index"][i])):
            key = (int(cols["index"][i]), names[i])
            if key not in seen:
                seen.add(key)
                keep.append(i)
        table = {k: v[keep] for k, v in cols.items()}
        table["imagename"] = np.array([names[i] for i in keep], dtype=object)
        return table

    def _name(self, shape: int, snum: int, texture: int, tnum: int) -> str:
        return (f"{self.categories[shape]}{snum}-{self.texture_categories[texture]}{tnum}"
                f"{self._extension}")

    def compute(self) -> dict[str, Tensor]:
        """Overall and per-category shape bias, shape / texture accuracy on the conflict
        images, 16-class accuracy on all images, and the counts. NaN where undefined."""
        self._table = table = self._deduplicated()
        stats = shape_bias_from_ids(table["decision"], table["shape"], table["texture"],
                                    num_categories=len(self.categories))
        num_seen = int(self.num_seen)
        out = {k: torch.tensor(v, dtype=torch.float64) for k, v in stats.items()
               if not k.startswith("num_") and k != "shape_bias_per_category"}
        out["shape_bias_per_category"] = torch.tensor(stats["shape_bias_per_category"],
                                                      dtype=torch.float64)
        for k, v in stats.items():
            if k.startswith("num_"):
                out[k] = torch.tensor(v, dtype=torch.long)
        out["num_duplicates"] = torch.tensor(num_seen - len(table["index"]), dtype=torch.long)
        return out

    def reset(self) -> None:
        super().reset()
        self._table = None

    # -------------------------------------------------------------------- rows
    def rows(self, subject: str | None = None) -> list[dict[str, Any]]:
        """model-vs-human CSV rows (``CSV_COLUMNS``), ordered by image name, one per image."""
        if self._table is None:
            self.compute()
        assert self._table is not None
        table = self._table
        subj = subject or self.subject
        return [
            {"subj": subj, "session": 1, "trial": trial, "rt": "NaN",
             "object_response": self.categories[d] if d >= 0 else "na",
             "category": self.categories[s], "condition": "NaN", "imagename": name}
            for trial, (d, s, name) in enumerate(
                zip(table["decision"], table["shape"], table["imagename"]), start=1)
        ]

    def write_csv(self, path: str | Path, subject: str | None = None) -> Path:
        """Write the rows as a model-vs-human raw-data CSV, atomically."""
        return write_rows_csv(path, self.rows(subject))

    def summary(self) -> dict[str, Any]:
        """JSON-friendly result: overall, per category, accuracies and counts."""
        return summary_from_compute(self.compute(), self.categories)


def shape_bias_from_ids(decision: np.ndarray, shape: np.ndarray, texture: np.ndarray,
                        num_categories: int) -> dict[str, Any]:
    """The formula on integer ids (decision -1 = no response). Pure function, shared by the
    metric and the CSV path so that both agree exactly."""
    decision, shape, texture = (np.asarray(a, dtype=np.int64) for a in (decision, shape, texture))
    conflict = shape != texture
    shape_hit = conflict & (decision == shape)
    texture_hit = conflict & (decision == texture)
    per_category = []
    for c in range(num_categories):
        rows = shape == c
        per_category.append(_ratio(int((shape_hit & rows).sum()),
                                   int((shape_hit & rows).sum() + (texture_hit & rows).sum())))
    n_conflict = int(conflict.sum())
    n_shape, n_texture = int(shape_hit.sum()), int(texture_hit.sum())
    return {
        "shape_bias": _ratio(n_shape, n_shape + n_texture),
        "shape_bias_per_category": per_category,
        "shape_accuracy": _ratio(n_shape, n_conflict),
        "texture_accuracy": _ratio(n_texture, n_conflict),
        "accuracy": _ratio(int((decision == shape).sum()), len(shape)),
        "num_images": len(shape),
        "num_conflict": n_conflict,
        "num_shape_hits": n_shape,
        "num_texture_hits": n_texture,
        "num_no_response": int((decision < 0).sum()),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def summary_from_compute(out: dict[str, Tensor], categories: Sequence[str]) -> dict[str, Any]:
    """``ShapeBias.compute()`` output -> plain floats / ints keyed like ``summary.json``."""
    per_cat = out["shape_bias_per_category"].tolist()
    return {
        "shape_bias": float(out["shape_bias"]),
        "shape_bias_per_category": dict(zip(categories, per_cat)),
        "shape_accuracy": float(out["shape_accuracy"]),
        "texture_accuracy": float(out["texture_accuracy"]),
        "accuracy": float(out["accuracy"]),
        "counts": {k: int(v) for k, v in out.items() if k.startswith("num_")},
    }
