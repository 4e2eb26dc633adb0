"""Shape-bias matrix plot from model-vs-human CSVs, with MMSelfSup's command-line flags.

    selfsup-vis-plot-shape-bias --csv-dir raw-data/cue-conflict --result-dir out \
        --model-names resnet50 bagnet33 --colors 65 90 140 110 110 110 --markers o s

Same as ``python -m selfsup_vis task=plot_shape_bias task.csv_dirs=[...]``; humans are added
automatically when subject CSVs are present. Writes the PDF + PNG, shape_bias.csv and
summary.json into --result-dir.
"""

from __future__ import annotations

import argparse
import logging
import sys

from selfsup_vis.shape_bias.report import plot_from_csvs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="selfsup-vis-plot-shape-bias", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--csv-dir", nargs="+", required=True,
                   help="director(y/ies) of cue-conflict_<subject>_session-1.csv files")
    p.add_argument("--result-dir", required=True, help="where the plot and numbers go")
    p.add_argument("--model-names", nargs="+", default=[],
                   help="models to plot (subj or file names); default: all models in the CSVs")
    p.add_argument("--colors", nargs="+", type=float, default=[],
                   help="R G B (0-255) per model, in the order of --model-names")
    p.add_argument("--markers", nargs="+", default=[], help="matplotlib marker per model")
    p.add_argument("--plotting-names", nargs="+", default=[], help="legend name per model")
    p.add_argument("--icons-dir", default=None, help="<dir>/<category>.png icons")
    p.add_argument("--download-icons", action="store_true",
                   help="fetch missing icons from the model-vs-human repository (network)")
    p.add_argument("--no-humans", action="store_true", help="leave the human subjects out")
    p.add_argument("--pattern", default="*.csv", help="CSV file glob (files are recognised by their header)")
    p.add_argument("--formats", nargs="+", default=["pdf", "png"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = plot_from_csvs(
            csv_dirs=args.csv_dir, result_dir=args.result_dir,
            models=args.model_names or None, plotting_names=args.plotting_names or None,
            colors=args.colors or None, markers=args.markers or None,
            icons_dir=args.icons_dir, include_humans=not args.no_humans,
            download_icons=args.download_icons, formats=args.formats, pattern=args.pattern,
        )
    except (ValueError, OSError) as e:
        print(f"selfsup-vis-plot-shape-bias: error: {e}", file=sys.stderr)
        return 2
    for name, m in summary["models"].items():
        print(f"{name:24s} shape bias {m['shape_bias']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
