"""Reading the per-job ``status.json`` records of a sweep (format: :mod:`selfsup_vis.launch.status`).

Kept apart from ``status`` so that the sweep launcher (:mod:`selfsup_vis.launch.local_launcher`),
which ``status``'s Hydra callback installs, can read them without an import cycle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
SWEEP_ID_ENV = "SELFSUP_VIS_SWEEP_ID"


def read_statuses(sweep_dir: Path, sweep_id: str | None = None) -> list[dict[str, Any]]:
    """Every job record under ``sweep_dir`` (of sweep ``sweep_id`` when given), by job number;
    each gets ``dir`` (its job folder)."""
    records = []
    for path in sorted(Path(sweep_dir).rglob(STATUS_FILE)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if sweep_id is not None and record.get("sweep_id") != sweep_id:
            continue
        records.append({**record, "dir": str(path.parent)})
    return sorted(records, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0, r["dir"]))


def slurm_state(job_id: str) -> str | None:
    """The job's state from ``scontrol`` (or ``sacct``), None when Slurm does not know it."""
    for cmd in (["scontrol", "show", "job", "-o", job_id],
                ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id]):
        if not shutil.which(cmd[0]):
            continue
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for part in out.split():
            if part.startswith("JobState="):
                return part.split("=", 1)[1]
        if cmd[0] == "sacct" and out.strip():
            return out.split()[0]
    return None
