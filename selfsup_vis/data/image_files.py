"""Image files named on the command line (``task.images``): expanded, decoded, resized to a
model's input with its eval pipeline."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import ListConfig
from PIL import Image

from selfsup_vis.data.folders import IMAGE_EXTENSIONS, display_name, open_rgb
from selfsup_vis.data.transforms import pipeline_for_model

log = logging.getLogger(__name__)


def slug(name: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_")[:80] or "image"


def expand_images(spec: Any, max_images: int) -> list[Path]:
    """Files named by ``task.images`` (a file, a folder, or a list of them), at most
    ``max_images``; a missing path is an error naming it."""
    items = list(spec) if isinstance(spec, list | tuple | ListConfig) else [spec]
    files: list[Path] = []
    for item in items:
        p = Path(str(item)).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"task.images: no images ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"task.images: no such file or folder: {p}")
    if len(files) > max_images:
        log.info("task.images: %d images found, using the first %d (task.max_images)", len(files), max_images)
    return files[:max_images]


def load_image_files(files: Sequence[Path], model_cfg: Any, resize: str) -> tuple[torch.Tensor, list[str]]:
    """Decode (grayscale / RGBA / 16-bit converted) and resize to the model's input size."""
    if resize not in ("crop", "stretch"):
        raise ValueError(f"task.resize must be 'crop' or 'stretch', got {resize!r}")
    pipeline = pipeline_for_model(model_cfg, "eval", crop_pct=1.0 if resize == "crop" else None)
    size = int(model_cfg.img_size)
    patch = int(model_cfg.get("encoder_stride") or model_cfg.get("patch_size") or 1)
    images, names = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                mode = im.mode
        except Exception:
            mode = "?"
        pil = open_rgb(f)  # raises CorruptImageError naming the file
        if mode not in ("RGB", "?"):
            log.info("%s: %s image converted to RGB", f, mode)
        w, h = pil.size
        if (w, h) != (size, size):
            why = f" (not divisible by the patch size {patch})" if (w % patch or h % patch) else ""
            log.info("%s: %dx%d resized to %dx%d (%s)%s", f, w, h, size, size, resize, why)
        images.append(pipeline(pil)["image"])
        names.append(display_name(f.name))
    return torch.stack(images), names
