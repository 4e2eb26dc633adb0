"""Rebuild reports from run directories: ``python -m selfsup_vis.report <dir> [...]``
(a run directory gets its report.html, a sweep directory its summary and report.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup_vis.report.html import build_run_report
from selfsup_vis.report.render import DEFAULT_MAX_BYTES
from selfsup_vis.report.sweep import is_job_dir, summarize_sweep


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m selfsup_vis.report", description=__doc__)
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6,
                   help="size budget of one report.html (figures and thumbnails)")
    args = p.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            p.error(f"not a directory: {d}")
        budget = int(args.max_mb * 1e6)
        if any(is_job_dir(c) for c in d.iterdir()) and not (d / "summary.json").is_file():
            print(summarize_sweep(d, max_bytes=budget)["report"])
        else:
            print(build_run_report(d, max_bytes=budget))


if __name__ == "__main__":
    main()
