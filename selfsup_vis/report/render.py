"""Shared by the run and sweep reports: the Jinja environment, figure embedding, sizes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2

REPORT = "report.html"
DEFAULT_MAX_BYTES = 20_000_000  # the whole page: figures + thumbnails + Bokeh (~1.5 MB)
MAX_EMBEDDED_FIGURES = 60
MAX_PER_FOLDER = 8
TEMPLATES = Path(__file__).parent / "templates"


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class FigureItem:
    rel: str
    data_uri: str | None
    why: str | None = None


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _series_sample(paths: list[Path], per_dir: int) -> set[Path]:
    """Of a folder holding a series (per-step dumps, per-sample views), ``per_dir`` evenly
    spaced files (first and last included); every file of smaller folders."""
    by_dir: dict[Path, list[Path]] = {}
    for p in paths:
        by_dir.setdefault(p.parent, []).append(p)
    keep: set[Path] = set()
    for files in by_dir.values():
        files = sorted(files)
        picks = range(len(files)) if len(files) <= per_dir else \
            sorted({round(i * (len(files) - 1) / (per_dir - 1)) for i in range(per_dir)})
        keep.update(files[i] for i in picks)
    return keep


def embed_figures(paths: list[Path], root: Path, budget: int) -> tuple[list[FigureItem], int]:
    """Figures as data URIs while ``budget`` bytes last (grids first; of a long series in one
    folder, ``MAX_PER_FOLDER`` evenly spaced ones), the rest linked."""
    order = sorted(paths, key=lambda p: ("grid" not in p.name, len(p.relative_to(root).parts), str(p)))
    sample = _series_sample(order, MAX_PER_FOLDER)
    items, used, embedded = [], 0, 0
    for p in order:
        rel = p.relative_to(root).as_posix()
        size = p.stat().st_size * 4 // 3 + 32
        if p not in sample:
            items.append(FigureItem(rel, None, f"{MAX_PER_FOLDER} evenly spaced figures of its folder are shown"))
        elif embedded >= MAX_EMBEDDED_FIGURES:
            items.append(FigureItem(rel, None, f"more than {MAX_EMBEDDED_FIGURES} figures"))
        elif used + size > budget:
            items.append(FigureItem(rel, None, "the report's size budget is spent"))
        else:
            items.append(FigureItem(rel, "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")))
            used += size
            embedded += 1
    items.sort(key=lambda it: it.data_uri is None)  # embedded first, links after
    return items, used
