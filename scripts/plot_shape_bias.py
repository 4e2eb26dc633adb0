#!/usr/bin/env python
"""Kept for old command lines: the tool is ``selfsup-vis-plot-shape-bias`` (installed with the package;
code in selfsup_vis/cli/plot_shape_bias.py)."""

import sys

from selfsup_vis.cli.plot_shape_bias import main

if __name__ == "__main__":
    sys.exit(main())
