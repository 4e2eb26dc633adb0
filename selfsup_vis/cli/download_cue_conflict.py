"""Download the cue-conflict stimuli, model-vs-human's human/model CSVs and category icons.

    selfsup-vis-download-cue-conflict                     # everything, into the cache
    selfsup-vis-download-cue-conflict --what stimuli --dest data/cue-conflict

Sources: model-vs-human's v0.1 release (texture-vs-shape repository as fallback) for the
1280 stimuli; the model-vs-human repository for raw-data CSVs and icons. Files are checked
against their published sha256, the stimuli against the 16 x 80 layout; writes are atomic.
Cache: $SELFSUP_VIS_CACHE/model-vs-human or ~/.cache/selfsup_vis/model-vs-human.
"""

from __future__ import annotations

import argparse
import logging
import sys

from selfsup_vis.shape_bias import download as dl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selfsup-vis-download-cue-conflict", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--what", nargs="+", choices=["stimuli", "csvs", "icons", "all"],
                   default=["all"])
    p.add_argument("--dest", default=None,
                   help="target directory (only with a single --what); default: the cache")
    p.add_argument("--stimuli-url", nargs="+", default=list(dl.STIMULI_URLS),
                   help="archive URL(s) of the stimuli, tried in order")
    p.add_argument("--base-url", default=dl.MVH_RAW, help="model-vs-human raw file base URL")
    p.add_argument("--no-model-csvs", action="store_true", help="only the human CSVs")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    what = {"stimuli", "csvs", "icons"} if "all" in args.what else set(args.what)
    if args.dest and len(what) > 1:
        p.error("--dest needs a single --what (stimuli, csvs or icons)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if "csvs" in what:
            print("CSVs:", dl.fetch_csvs(args.dest, args.base_url, not args.no_model_csvs,
                                         timeout=args.timeout))
        if "icons" in what:
            print("icons:", dl.fetch_icons(args.dest, args.base_url, timeout=args.timeout))
        if "stimuli" in what:
            print("stimuli:", dl.fetch_cue_conflict(args.dest, args.stimuli_url, args.timeout))
    except (dl.DownloadError, OSError, ValueError) as e:
        print(f"selfsup-vis-download-cue-conflict: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
