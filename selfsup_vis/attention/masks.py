"""Object masks for the pointing game: from the synthetic dataset (it knows where its shape
is) or from a folder of mask images parallel to the images, brought to the model's input
geometry exactly as the images were (resize, or resize + center crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torchvision.transforms as T
from PIL import Image

from selfsup_vis.data.folders import IMAGE_EXTENSIONS


def to_input_geometry(mask: Image.Image | np.ndarray, size: int, crop_pct: float | None) -> np.ndarray:
    """(size, size) bool mask after the eval pipeline's geometry: a plain resize when
    ``crop_pct`` is None, else shorter side to ``size / crop_pct`` and a center crop."""
    if isinstance(mask, np.ndarray):
        mask = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, "L")
    nearest = T.InterpolationMode.NEAREST
    if crop_pct is None:
        out = T.Resize((size, size), interpolation=nearest)(mask)
    else:
        out = T.CenterCrop(size)(T.Resize(int(round(size / crop_pct)), interpolation=nearest)(mask))
    return np.asarray(out.convert("L")) > 0


def find_mask(masks_root: str | Path, name: str) -> Path:
    """The mask of image ``name`` (a path relative to its dataset root, or a file name):
    ``masks_root/<same relative path and stem>.<any image extension>``, else
    ``masks_root/<stem>.<ext>``. Missing: an error naming where it was looked for."""
    root = Path(masks_root).expanduser()
    rel = Path(name)
    tried = []
    for base in dict.fromkeys([rel.with_suffix(""), Path(rel.stem)]):
        for ext in IMAGE_EXTENSIONS:
            p = root / f"{base}{ext}"
            if p.is_file():
                return p
        tried.append(str(root / f"{base}.<{'|'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS[:3])}|...>"))
    raise FileNotFoundError(f"task.masks_root: no mask for image {name!r}; looked for {' and '.join(tried)}")


def load_mask(path: str | Path, size: int, crop_pct: float | None) -> np.ndarray:
    """A mask image (nonzero = object, any mode) in the model's input geometry."""
    with Image.open(path) as im:
        return to_input_geometry(im.convert("L"), size, crop_pct)
