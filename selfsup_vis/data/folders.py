"""Image files on disk: class sub-folders (any root), ImageNet val layouts, cue-conflict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from selfsup_vis.data.base import CorruptImageError, ImageDataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_rgb(path: str | Path) -> Image.Image:
    """Open any image as 8-bit RGB (grayscale, RGBA, palette and 16-bit are converted).

    Raises ``CorruptImageError`` naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16/32-bit grayscale: rescale to 8 bit instead of clipping.
                import numpy as np

                arr = np.asarray(im, dtype=np.float64)
                hi = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                im = Image.fromarray((arr / hi * 255).round().astype("uint8"), "L")
            if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, rgba).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"cannot read image {path}: {err}") from err


class FileImageDataset(ImageDataset):
    """Images given as file paths with labels."""

    def __init__(
        self,
        root: Path,
        paths: list[Path],
        labels: list[int],
        classes: list[str],
        transform: Callable[[Image.Image], dict[str, Any]] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.paths = paths
        names = [str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p in paths]
        super().__init__(labels, names, classes, transform, skip_corrupt)

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])


def _check_root(root: str | Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{what}: dataset root does not exist: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{what}: dataset root is not a directory: {root}")
    return root


def scan_class_folders(root: str | Path, what: str = "image_folder") -> tuple[list[Path], list[int], list[str]]:
    """``root/<class>/**/<image>`` → (paths, labels, classes); classes sorted by name.

    Empty class folders and a root without class folders are errors that name the folders.
    """
    root = _check_root(root, what)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"{what}: no class sub-folders in {root} (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if _is_image(p))
        if not files:
            empty.append(d.name)
        paths += files
        labels += [label] * len(files)
    if empty:
        raise FileNotFoundError(
            f"{what}: {len(empty)} class folder(s) in {root} contain no images "
            f"({', '.join(IMAGE_EXTENSIONS)}): {', '.join(empty[:20])}"
        )
    return paths, labels, [d.name for d in class_dirs]


def image_folder_dataset(root: str | Path, transform=None, skip_corrupt: bool = False) -> FileImageDataset:
    paths, labels, classes = scan_class_folders(root)
    return FileImageDataset(Path(root), paths, labels, classes, transform, skip_corrupt)


def imagenet_dataset(
    root: str | Path,
    split: str = "val",
    label_file: str | None = None,
    class_names_file: str | None = None,
    transform=None,
    skip_corrupt: bool = False,
) -> FileImageDataset:
    """ImageNet ``root/<split>``: one folder per class, or a flat folder plus a label file.

    The label file has one line per image, ``<file name> <label>`` (mmpretrain's ``val.txt``)
    or just ``<label>`` in sorted-file order (the devkit's ground truth). ``class_names_file``
    gives one class name per line (else the folder names / label numbers are used).
    """
    base = _check_root(root, "imagenet")
    split_dir = base / split if (base / split).is_dir() else base
    subdirs = [d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subdirs and label_file is None:
        ds = image_folder_dataset(split_dir, transform, skip_corrupt)
    else:
        if label_file is None:
            raise FileNotFoundError(
                f"imagenet: {split_dir} has no class folders; give dataset.label_file "
                "(lines '<file> <label>' or '<label>')"
            )
        lf = Path(label_file)
        if not lf.is_file():
            raise FileNotFoundError(f"imagenet: label file not found: {lf}")
        files = sorted(p for p in split_dir.iterdir() if _is_image(p))
        if not files:
            raise FileNotFoundError(f"imagenet: no images in {split_dir}")
        rows = [ln.split() for ln in lf.read_text().splitlines() if ln.strip()]
        paths, labels = [], []
        if all(len(r) == 1 for r in rows):
            if len(rows) != len(files):
                raise ValueError(f"imagenet: {lf} has {len(rows)} labels for {len(files)} images in {split_dir}")
            paths, labels = files, [int(r[0]) for r in rows]
        else:
            for i, r in enumerate(rows):
                if len(r) < 2:
                    raise ValueError(f"imagenet: {lf} line {i + 1}: expected '<file> <label>', got {' '.join(r)!r}")
                p = split_dir / r[0]
                if not p.is_file():
                    raise FileNotFoundError(f"imagenet: {lf} line {i + 1} names a missing image: {p}")
                paths.append(p)
                labels.append(int(r[1]))
        n = max(labels) + 1
        ds = FileImageDataset(split_dir, paths, labels, [str(i) for i in range(n)], transform, skip_corrupt)
    if class_names_file:
        names = [ln.strip() for ln in Path(class_names_file).read_text().splitlines() if ln.strip()]
        if len(names) < len(ds.classes):
            raise ValueError(f"imagenet: {class_names_file} has {len(names)} names for {len(ds.classes)} classes")
        ds.classes = names[: len(ds.classes)] if subdirs else names
    return ds
