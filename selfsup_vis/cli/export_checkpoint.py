"""Export a selfsup_vis model (config + optional checkpoint) in MMSelfSup/mmpretrain layout or
as plain timm backbone weights.

  selfsup-vis-export-checkpoint model=mae_tiny model.checkpoint=in.ckpt \
      --layout mmpretrain --out mae_mm.pth
"""

from __future__ import annotations

import argparse
import sys

from selfsup_vis.checkpoints.export import LAYOUTS, export_checkpoint, save_checkpoint
from selfsup_vis.config import compose
from selfsup_vis.models import build_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selfsup-vis-export-checkpoint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=mae_vit-b16 model.checkpoint=x")
    p.add_argument("--layout", choices=LAYOUTS, default="mmpretrain")
    p.add_argument("--out", required=True, help="output .pth path (written atomically)")
    args = p.parse_args(argv)
    cfg = compose(args.overrides)
    model = build_model(cfg.model)
    if model.load_report is not None:
        print(model.load_report.summary())
    obj = export_checkpoint(model, args.layout)
    n = len(obj["state_dict"] if "state_dict" in obj else obj)
    path = save_checkpoint(obj, args.out)
    print(f"wrote {n} tensors in {args.layout} layout to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
