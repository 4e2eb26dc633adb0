"""``<run dir>/manifest.json``: the files one run wrote, so that its report and summary list
exactly them and ``task.overwrite=true`` clears exactly them.

A run directory holds one run's outputs. The manifest is started when the run starts (its
``started`` time) and brought up to date when the summary, the report and the run end are
written: every file under the run directory created or replaced since ``started`` (its
status-change time: a rename, a hard link or a write sets it) belongs to the run. A resumed run
(a Slurm requeue, a rerun of an interrupted job) keeps the first attempt's ``started``, so the
manifest holds every attempt's files.

Files are sorted into three lists:

- ``outputs``: figures, arrays, tables, summary.json, config_resolved.yaml, report.html, the
  run's ``features/`` links: what the report and summary.json list;
- ``logs``: the loggers' folders (``csv/``, ``tensorboard/``, ``wandb/``): cleared with the run,
  not listed as outputs;
- ``checkpoints``: ``checkpoints/`` (what a resumed training continues from).

Never listed nor cleared: Hydra's ``.hydra/`` and job log, the bookkeeping rewritten by every
attempt (status.json, this file), resume state keyed by content
(``_extract*`` chunk folders, private ``feature_cache`` entries) and what the config names
inside the run directory as an input or a cache (``dataset.root``, ``task.features``,
``task.cache_dir``, ``$SELFSUP_VIS_CACHE`` ...: see ``launch.rerun.kept_paths``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup_vis.utils.io import write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: rewritten by every attempt of a run: never an output
BOOKKEEPING = frozenset({"status.json", MANIFEST})
LOG_DIRS = frozenset({"csv", "tensorboard", "wandb"})
CHECKPOINT_DIRS = frozenset({"checkpoints"})
#: a file's status change may lag ``time.time()`` by a clock tick
CLOCK_SLACK_S = 0.1


def _kept(part: str) -> bool:
    """Folders of resume state and Hydra's own files, at any depth."""
    return part.startswith((".", "_extract")) or part in ("feature_cache", "__pycache__")


def kind_of(rel: Path) -> str | None:
    """``outputs`` / ``logs`` / ``checkpoints`` for a path relative to the run directory; None
    for what is neither listed nor cleared (module doc)."""
    parts = rel.parts
    if not parts or any(_kept(p) for p in parts):
        return None
    if len(parts) == 1 and (parts[0] in BOOKKEEPING or parts[0].endswith(".log")):
        return None  # bookkeeping and Hydra's job log (appended by every attempt)
    if parts[0] in LOG_DIRS and len(parts) > 1:
        return "logs"
    if parts[0] in CHECKPOINT_DIRS and len(parts) > 1:
        return "checkpoints"
    return "outputs"


def scan(run_dir: Path, since: float, keep: Sequence[Path] = ()) -> dict[str, list[str]]:
    """Every file under ``run_dir`` created or replaced since ``since``, by kind; folders in
    ``keep`` (a cache or an input the config put inside the run directory) are left out."""
    found: dict[str, list[str]] = {"outputs": [], "logs": [], "checkpoints": []}
    root = Path(run_dir)
    kept = {Path(k).resolve() for k in keep}
    for dirpath, dirnames, filenames in os.walk(root):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]  # wandb's latest-run
        dirnames[:] = sorted(d for d in dirnames if not _kept(d) and d not in links
                             and (Path(dirpath) / d).resolve() not in kept)
        for name in sorted([*filenames, *links]):
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            kind = kind_of(rel)
            if kind is None or path.resolve() in kept:
                continue
            try:
                changed = path.lstat().st_ctime
            except OSError:  # removed while we looked
                continue
            if changed >= since - CLOCK_SLACK_S:
                found[kind].append(rel.as_posix())
    return found


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("could not read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("outputs"), list) else None


class RunManifest:
    """The manifest of the run writing into ``run_dir`` (rank zero). ``started``: when the
    run's first attempt started (kept across resumes); ``attempt``: 1, then one more per resume."""

    def __init__(self, run_dir: Path, started: float | None = None, attempt: int = 1,
                 keep: Sequence[Path] = (), replaced: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.started = time.time() if started is None else float(started)
        self.attempt = int(attempt)
        self.keep = list(keep)
        #: how many finished runs this directory held before this one (``task.overwrite``)
        self.replaced = int(replaced)

    @classmethod
    def resume(cls, run_dir: Path, keep: Sequence[Path] = (), next_attempt: bool = True) -> RunManifest:
        """The manifest of an unfinished run continued in ``run_dir``: its first attempt's
        ``started`` and (``next_attempt``) one attempt more; a fresh one when there is none."""
        old = read_manifest(run_dir)
        if old is None or not isinstance(old.get("started"), int | float):
            return cls(run_dir, keep=keep)
        return cls(run_dir, old["started"], int(old.get("attempt", 1)) + int(next_attempt), keep,
                   int(old.get("replaced", 0)))

    def update(self) -> dict[str, Any]:
        """Scan the run directory, write ``manifest.json`` atomically and return it."""
        files = scan(self.run_dir, self.started, self.keep)
        record = {"started": self.started,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
                  "attempt": self.attempt, "replaced": self.replaced,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **files}
        try:
            write_json(self.run_dir / MANIFEST, record)
        except OSError as err:  # the manifest must never cost the run its result
            log.warning("could not write %s: %s", self.run_dir / MANIFEST, err)
        return record


def remove_listed(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Delete the files ``manifest`` lists (outputs, logs, checkpoints) and the folders they
    leave empty; never anything outside ``run_dir``. Returns the paths removed."""
    root = Path(run_dir).resolve()
    removed: list[str] = []
    dirs: set[Path] = set()
    # the loggers' folders are the run's whole (W&B's service writes its last log lines late)
    for name in sorted({str(rel).split("/")[0] for rel in manifest.get("logs") or []} & LOG_DIRS):
        if (root / name).is_dir() and not (root / name).is_symlink():
            removed += [p.relative_to(root).as_posix() for p in (root / name).rglob("*") if p.is_file()]
            shutil.rmtree(root / name)
    for kind in ("outputs", "logs", "checkpoints"):
        for rel in manifest.get(kind) or []:
            path = (root / str(rel)).resolve()
            if root not in path.parents or kind_of(path.relative_to(root)) is None:
                log.warning("manifest entry %r is not a run output: left alone", rel)
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(str(rel))
                dirs.update(p for p in path.parents if root in p.parents)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass
    return removed
