#!/usr/bin/env python
"""Kept for old command lines: the tool is ``selfsup-vis-export-checkpoint`` (installed with the package;
code in selfsup_vis/cli/export_checkpoint.py)."""

import sys

from selfsup_vis.cli.export_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
