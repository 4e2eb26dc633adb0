"""Where the Hydra configs live: inside the installed wheel, or top-level in a source checkout."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The ``conf/`` directory: ``selfsup_vis/conf`` in a wheel, ``<repo>/conf`` in a checkout."""
    pkg = Path(__file__).resolve().parents[1]
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"selfsup_vis: no conf/config.yaml next to {pkg}")
