"""Peak memory of loading a ViT-B sized MMSelfSup/mmpretrain MAE checkpoint.

Writes a random-weight MAE ViT-B/16 checkpoint (mmpretrain layout, ~112 M params, ~450 MB)
into a temporary directory, then loads it in fresh subprocesses and reports the peak RSS
increase divided by the checkpoint's weight bytes, for selfsup_vis's loader (mmap +
convert without copies + ``load_state_dict(assign=True)``) and for the naive way
(``torch.load`` into memory + ``load_state_dict`` copy), side by side.

  python scripts/bench_checkpoint_memory.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, gc
import torch
from selfsup_vis.models import build_model
from selfsup_vis.checkpoints import rules
from selfsup_vis.checkpoints.loading import LoadReport, convert_state_dict
cfg = json.loads(sys.argv[2]); mode = sys.argv[3]; path = sys.argv[1]
def peak():  # bytes: VmHWM (resettable), else ru_maxrss (KiB on Linux, inherited on fork)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
torch.set_num_threads(1)
base = peak()
model = build_model(cfg, load=False)
after_build = peak()
if mode == "selfsup_vis":
    model.load_weights(path)
else:  # naive: whole file in memory, then copied into the parameters
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    conv = convert_state_dict(sd, rules.mm_mae(), model, LoadReport(path))
    model.load_state_dict(conv, strict=False)
    del sd, conv
gc.collect()
with torch.no_grad():  # touch every weight (mmap pages are read lazily)
    total = sum(float(p.float().sum()) for p in model.state_dict().values() if p.is_floating_point())
    model.eval()(torch.zeros(1, 3, 224, 224), noise=torch.rand(1, 196))
print(json.dumps({"base": base, "after_build": after_build, "peak": peak()}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="directory for the generated checkpoint (default: a temp dir)")
    args = ap.parse_args(argv)
    import torch

    from selfsup_vis.checkpoints.export import export_checkpoint, save_checkpoint
    from selfsup_vis.models import build_model

    cfg = {"_target_": "selfsup_vis.models.mae.MAE", "name": "mae_vit-b16"}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        path = out_dir / "mae_vit-b16_mm.pth"
        if not path.exists():
            obj = export_checkpoint(build_model(cfg, load=False), "mmpretrain")
            save_checkpoint(obj, path)
            del obj
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
        weight_bytes = sum(t.numel() * t.element_size() for t in sd.values())
        del sd
        print(f"checkpoint {path}: "
              f"{weight_bytes / 2**20:.0f} MiB of weights")
        results = {}
        for mode in ("selfsup_vis", "naive"):
            res = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(cfg), mode],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            results[mode] = (r["peak"] - r["base"]) / weight_bytes
            print(f"{mode:>12}: peak RSS delta {(r['peak'] - r['base']) / 2**20:7.0f} MiB "
                  f"= {results[mode]:.2f} x weight bytes (model init alone "
                  f"{(r['after_build'] - r['base']) / weight_bytes:.2f} x)")
        print(f"ratio selfsup_vis / naive: {results['selfsup_vis'] / results['naive']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
