#!/usr/bin/env python
"""Kept for old command lines: the tool is ``selfsup-vis-download-cue-conflict`` (installed with the package;
code in selfsup_vis/cli/download_cue_conflict.py)."""

import sys

from selfsup_vis.cli.download_cue_conflict import main

if __name__ == "__main__":
    sys.exit(main())
