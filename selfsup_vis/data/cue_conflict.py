"""Layout check of the cue-conflict stimulus set: 16 category folders x 80 PNGs = 1280.

A partial download or a wrong ``dataset.root`` would otherwise give a silently different
shape bias; the error lists what is missing or extra.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from selfsup_vis.data.cue_conflict_categories import CATEGORIES, parse_stimulus

IMAGES_PER_CATEGORY = 80
NUM_IMAGES = IMAGES_PER_CATEGORY * len(CATEGORIES)
#: sha256 over the sorted lines "<category>/<file>\t<sha256 of file>\n" of the published set.
REFERENCE_TREE_DIGEST = "2b1e91cbbb8e9329de7433090e12a93067439c10f9c97f7ccaf2cebb7a6184f4"


class CueConflictLayoutError(ValueError):
    """The cue-conflict folder is not the complete 16 x 80 stimulus set."""


def list_cue_conflict(root: str | Path) -> list[Path]:
    """Sorted PNG paths ``<root>/<category>/<shape><i>-<texture><j>.png`` after checking the
    layout; raises ``CueConflictLayoutError`` naming missing / extra folders and files."""
    root = Path(root)
    if not root.is_dir():
        raise CueConflictLayoutError(
            f"cue-conflict root {root} does not exist or is not a directory; download it with "
            "`selfsup-vis-download-cue-conflict --what stimuli --dest <dir>` (installed with "
            "selfsup_vis), then dataset.root=<dir>"
        )
    problems: list[str] = []
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    missing = [c for c in CATEGORIES if c not in folders]
    extra = sorted(set(folders) - set(CATEGORIES))
    if missing:
        problems.append(f"missing category folder(s): {missing}")
    if extra:
        problems.append(f"unexpected folder(s): {extra}")
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if stray:
        problems.append(f"unexpected file(s) at the top level: {_short(stray)}")
    images: list[Path] = []
    for cat in CATEGORIES:
        if cat not in folders:
            continue
        files = sorted(p for p in folders[cat].iterdir() if not p.name.startswith("."))
        pngs = [p for p in files if p.is_file() and p.suffix.lower() == ".png"]
        others = [p.name for p in files if p not in pngs]
        if others:
            problems.append(f"{cat}/: not PNG image(s): {_short(others)}")
        bad = []
        for p in pngs:
            try:
                if parse_stimulus(f"{cat}/{p.name}").texture not in CATEGORIES:
                    bad.append(p.name)
            except ValueError:
                bad.append(p.name)
        if bad:
            problems.append(f"{cat}/: file(s) not named '{cat}<i>-<texture><j>.png': {_short(bad)}")
        if len(pngs) != IMAGES_PER_CATEGORY:
            word = "missing" if len(pngs) < IMAGES_PER_CATEGORY else "extra"
            problems.append(f"{cat}/: {len(pngs)} PNGs, expected {IMAGES_PER_CATEGORY} "
                            f"({abs(IMAGES_PER_CATEGORY - len(pngs))} {word})")
        images.extend(pngs)
    if problems:
        raise CueConflictLayoutError(
            f"{root} is not the complete cue-conflict set (16 folders x {IMAGES_PER_CATEGORY} PNGs "
            f"= {NUM_IMAGES}; found {len(images)} PNGs):\n  - " + "\n  - ".join(problems)
        )
    return images


def tree_digest(root: str | Path) -> str:
    """Content digest of the set, comparable with ``REFERENCE_TREE_DIGEST``."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(f"{p.relative_to(root).as_posix()}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                 .encode())
    return h.hexdigest()


def _short(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_cue_conflict_layout(root: str | Path) -> list[Path]:
    """Alias used by ``CueConflictDataModule``: the layout check, returning the PNG paths."""
    return list_cue_conflict(root)
