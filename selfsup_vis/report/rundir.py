"""What a run directory holds, read back for its report: summary.json, config_resolved.yaml,
status.json (written by the launcher when there is one), figures and data files: those its
manifest.json lists (``report/manifest.py``: exactly the run's own files, as summary.json's
``outputs``), else, for runs written before manifests, those found in the directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsup_vis.report.manifest import read_manifest

log = logging.getLogger(__name__)

#: logger and cache folders whose files are copies or internals, not the run's outputs
SKIP_DIRS = {"csv", "tensorboard", "wandb", ".hydra", "features", "_extract", "feature_cache",
             "checkpoints", "__pycache__"}
FIGURE_EXT = {".png"}
DATA_EXT = {".csv", ".json", ".npy", ".npz", ".txt", ".parquet", ".yaml", ".md", ".log", ".pdf",
            ".svg", ".ckpt"}


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object (Python's json reads the NaN we write); None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("could not read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else {"value": data}


def read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        log.warning("could not read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None


def _outputs(root: Path, suffixes: set[str]) -> list[Path]:
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            found.append(p)
    return found


@dataclass
class RunDir:
    """One run directory, read once."""

    path: Path
    summary: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    overrides: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: str | Path) -> RunDir:
        p = Path(path)
        overrides = []
        hydra_overrides = p / ".hydra" / "overrides.yaml"
        if hydra_overrides.is_file():
            try:
                overrides = [str(o) for o in (yaml.safe_load(hydra_overrides.read_text()) or [])]
            except yaml.YAMLError:
                overrides = []
        status = read_json(p / "status.json")
        if status and not overrides and isinstance(status.get("overrides"), list):
            overrides = [str(o) for o in status["overrides"]]
        return cls(p, read_json(p / "summary.json"), read_yaml(p / "config_resolved.yaml"),
                   status, overrides, read_manifest(p))

    @property
    def task(self) -> str | None:
        for src in (self.summary or {}, self.status or {}):
            if isinstance(src.get("task"), str):
                return src["task"]
        task = (self.config or {}).get("task")
        return task.get("name") if isinstance(task, dict) else None

    def state(self, error: str | None = None) -> tuple[str, str | None]:
        """``(status, error)``: status.json's word when there is one, else ``failed`` with
        ``error`` or the failed summary's error, else ``done`` when summary.json exists, else
        ``incomplete``."""
        summary = self.summary or {}
        if self.status and self.status.get("status"):
            full = summary.get("error") if summary.get("status") == "failed" else None
            return str(self.status["status"]), full or self.status.get("error") or error
        if error or summary.get("status") == "failed":
            return "failed", error or summary.get("error") or "failed (no error recorded)"
        if self.summary is not None:
            return "done", None
        return "incomplete", "no summary.json (the job did not finish)"

    def _listed(self, suffixes: set[str] | None) -> list[Path]:
        """The manifest's outputs that exist, with ``suffixes`` (None: all but figures)."""
        paths = [self.path / str(rel) for rel in (self.manifest or {}).get("outputs") or []]
        return [p for p in paths if p.is_file() and p.name != "report.html"
                and (p.suffix.lower() in suffixes if suffixes is not None else p.suffix.lower() not in FIGURE_EXT)]

    def figures(self) -> list[Path]:
        if self.manifest is not None:
            return self._listed(FIGURE_EXT)
        return _outputs(self.path, FIGURE_EXT)

    def data_files(self) -> list[Path]:
        """Every other file of the run (its manifest's), report.html left out."""
        if self.manifest is not None:
            return self._listed(None)
        return [p for p in _outputs(self.path, DATA_EXT) if p.name != "report.html"]


def first_line(text: str | BaseException | None) -> str | None:
    """The first non-empty line of an error message, prefixed with its type for exceptions."""
    if text is None:
        return None
    if isinstance(text, BaseException):
        msg = str(text).strip().splitlines()
        return f"{type(text).__name__}: {msg[0]}" if msg else type(text).__name__
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else None
