"""Image files on disk: class sub-folders (any root), ImageNet val layouts, cue-conflict."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from selfsup_vis.data.base import CorruptImageError, ImageDataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def display_name(name: str | os.PathLike) -> str:
    """A file name safe to print, plot and write as UTF-8: bytes that are not UTF-8 (kept by
    Python as surrogates) become ``\\xNN`` escapes instead of crashing every writer."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_8bit(im: Image.Image, path: str | Path) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale -> 8-bit ``L`` on a stated scale; a range
    with no defined display scale is refused rather than clipped to black/white."""
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        if not np.isfinite(arr).all():
            raise CorruptImageError(f"cannot read image {path}: float image ({im.mode}) with "
                                    "NaN/inf pixels")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            scale = 1.0  # float images in [0, 1]
        elif lo >= 0 and hi <= 255:
            scale = 255.0  # 8-bit values stored as float
        else:
            raise CorruptImageError(
                f"cannot read image {path}: float image (mode F) with values in [{lo:.4g}, "
                f"{hi:.4g}] has no defined display range (expected [0, 1] or [0, 255]); convert "
                "it to 8/16-bit first")
        log.info("%s: float image scaled from [0, %g] to 8 bit", display_name(path), scale)
    elif im.mode in _SIXTEEN_BIT:
        scale = 65535.0
    else:  # "I": 32-bit integers, usually 8- or 16-bit data in a wider container
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 65535:
            raise CorruptImageError(
                f"cannot read image {path}: 32-bit integer image with values in [{lo:.0f}, "
                f"{hi:.0f}] has no defined display range (expected 8- or 16-bit values)")
        scale = 255.0 if hi <= 255 else 65535.0
    return Image.fromarray((np.clip(arr / scale, 0, 1) * 255).round().astype("uint8"), "L")


def open_rgb(path: str | Path) -> Image.Image:
    """Open any image as 8-bit RGB, upright (EXIF orientation applied); grayscale, RGBA,
    palette, 16-bit, 32-bit and float images are converted on a stated scale.

    Raises ``CorruptImageError`` naming the file when it cannot be decoded, is larger than
    PIL's decompression-bomb limit, or has no defined display range.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: show it upright
                im = ImageOps.exif_transpose(im)
            if im.mode in (*_SIXTEEN_BIT, "I", "F"):
                im = _to_8bit(im, path)
            if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, rgba).convert("RGB")
            return im.convert("RGB")
    except Image.DecompressionBombError as err:
        raise CorruptImageError(
            f"cannot read image {display_name(path)}: {err} (PIL refuses images over "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; raise PIL.Image.MAX_IMAGE_PIXELS only "
            "for a file you trust)") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"cannot read image {display_name(path)}: {err}") from err


def unreadable_images(dataset: ImageDataset, indices: Sequence[int]) -> list[dict[str, Any]]:
    """The samples among ``indices`` whose image cannot be decoded: ``{index, name, error}``.

    Decodes each image once (the price of knowing before extraction which samples a
    ``skip_corrupt`` run will drop)."""
    bad = []
    for i in indices:
        try:
            dataset.load_image(int(i))
        except CorruptImageError as err:
            bad.append({"index": int(i), "name": dataset.names[int(i)], "error": str(err)})
    return bad


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
        names = [display_name(p.relative_to(self.root) if p.is_relative_to(self.root) else p) for p in paths]
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


def _walk_images(d: Path, dangling: list[Path], unreadable: list[str]) -> list[Path]:
    """Image files under ``d`` (sorted); dangling symlinks and unreadable folders are collected."""
    def onerror(err: OSError) -> None:
        unreadable.append(f"{display_name(err.filename or d)} ({err.strerror or err})")

    files = []
    for top, dirs, names in os.walk(d, onerror=onerror):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for n in names:
            p = Path(top) / n
            if p.suffix.lower() not in IMAGE_EXTENSIONS or n.startswith("."):
                continue
            if p.is_symlink() and not p.exists():
                dangling.append(p)
            elif p.is_file():
                files.append(p)
    return sorted(files)


def scan_class_folders(root: str | Path, what: str = "image_folder") -> tuple[list[Path], list[int], list[str]]:
    """``root/<class>/**/<image>`` → (paths, labels, classes); classes sorted by name.

    Empty or unreadable class folders and a root without class folders are errors that name
    the folders; dangling symlinks are skipped with a warning that names them.
    """
    root = _check_root(root, what)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"{what}: no class sub-folders in {root} (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    empty, dangling, unreadable = [], [], []
    for label, d in enumerate(class_dirs):
        files = _walk_images(d, dangling, unreadable)
        if not files:
            empty.append(display_name(d.name))
        paths += files
        labels += [label] * len(files)
    if unreadable:
        raise PermissionError(
            f"{what}: cannot list {len(unreadable)} folder(s) under {display_name(root)}: "
            f"{'; '.join(unreadable[:10])} (fix the permissions or move them out of the dataset)")
    if dangling:
        log.warning("%s: skipping %d dangling symlink(s) (their targets do not exist): %s",
                    what, len(dangling), ", ".join(display_name(p) for p in dangling[:10])
                    + (", ..." if len(dangling) > 10 else ""))
    if empty:
        raise FileNotFoundError(
            f"{what}: {len(empty)} class folder(s) in {root} contain no images "
            f"({', '.join(IMAGE_EXTENSIONS)}): {', '.join(empty[:20])}"
        )
    return paths, labels, [display_name(d.name) for d in class_dirs]


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
        # built again with the names (a dataset is not rewired after construction)
        ds = FileImageDataset(ds.root, ds.paths, ds.labels, names[: len(ds.classes)] if subdirs else names,
                              transform, skip_corrupt)
    return ds
