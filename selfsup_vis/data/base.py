"""The dataset protocol all our sources share: an image, its label, index and name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

log = logging.getLogger(__name__)


class CorruptImageError(RuntimeError):
    """An image file that cannot be decoded; the message names the file."""


class ImageDataset(Dataset):
    """Base class: subclasses implement ``load_image``; ``__getitem__`` applies the pipeline.

    A sample is a dict: the pipeline's output (``image`` or ``views``, maybe ``mask``) plus
    ``label``, ``index`` and ``name``. With ``skip_corrupt`` an unreadable image yields
    ``None``, which ``collate_skip_none`` drops with a warning.
    """

    def __init__(
        self,
        labels: Sequence[int],
        names: Sequence[str],
        classes: Sequence[str],
        transform: Callable[[Image.Image], dict[str, Any]] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        if len(labels) != len(names):
            raise ValueError("labels and names differ in length")
        self.labels = list(labels)
        self.names = list(names)
        self.classes = list(classes)
        self.transform = transform
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            image = self.load_image(index)
        except CorruptImageError as err:
            if not self.skip_corrupt:
                raise
            log.warning("skipping corrupt image: %s", err)
            return None
        sample = self.transform(image) if self.transform is not None else {"image": image}
        sample.update(label=self.labels[index], index=index, name=self.names[index])
        return sample


def collate_skip_none(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Default collate that drops samples a dataset skipped (``None``)."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return {"index": torch.zeros(0, dtype=torch.long), "label": torch.zeros(0, dtype=torch.long)}
    return default_collate(kept)
