"""What the default training callbacks cost: ``task=pretrain`` on a small image folder with
``callbacks=default`` vs ``callbacks=none``, side by side in one run, and the ratio of fit times.

Each fit runs in a fresh process (as ``python -m selfsup_vis task=pretrain`` would: lazy imports
of the drawing code are part of what a user pays), composed by ``selfsup_vis.config.compose`` and
run through ``run_task``; the fit time is ``summary.json``'s ``fit_seconds`` (``Trainer.fit``
only, without process start-up and model building). Per-callback time comes from Lightning's
``SimpleProfiler`` (the summed hook times of each callback). Rounds are interleaved
(none, default, none, default, ...); the ratio uses each variant's median round. With
``callbacks=none`` task=pretrain still adds its checkpoints and the lr monitor, so the
difference is our drawing / statistics callbacks.

    python scripts/bench_callbacks.py                            # 40 synthetic PNGs, 10 epochs
    python scripts/bench_callbacks.py --epochs 3 --rounds 1      # quicker
    python scripts/bench_callbacks.py --root /data/my_folder --model mae_tiny
    nice -n 10 python scripts/bench_callbacks.py -- callbacks.embedding.min_interval_s=0  # extra overrides

The load average (1 / 5 / 15 min) is printed before and after: on a shared machine wall times
are only comparable at similar load; the CPU time of each task (user + system of the process and
its DataLoader workers) is printed too, as a measure that other jobs disturb less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

VARIANTS = ("none", "default")


def make_folder(root: Path, n_images: int, n_classes: int, size: int) -> Path:
    """``n_images`` PNGs of the synthetic shapes in ``n_classes`` class folders."""
    from selfsup_vis.data.synthetic import SyntheticShapes

    per_class = -(-n_images // n_classes)
    ds = SyntheticShapes("train", n_classes, size, per_class, 1, 0, None)
    written = 0
    for i in range(len(ds)):
        if written == n_images:
            break
        d = root / ds.classes[ds.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        ds.load_image(i).convert("RGB").save(d / f"{i:04d}.png")
        written += 1
    return root


def loadavg() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers):
    less disturbed by other jobs on a shared machine than wall time."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


# --------------------------------------------------------------------------- one fit (child)
def parse_profile(path: Path) -> dict[str, float]:
    """Summed seconds per callback from a SimpleProfiler report (``[Callback]Name.hook`` rows)."""
    per: dict[str, float] = defaultdict(float)
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|") if c.strip()]
        if len(cells) < 4 or not cells[0].startswith("[Callback]"):
            continue
        name = re.sub(r"\{.*\}", "", cells[0][len("[Callback]"):]).rsplit(".", 1)[0]
        try:
            per[name] += float(cells[3])  # Action | Mean duration | Num calls | Total time | %
        except ValueError:
            continue
    return dict(per)


def worker(args: argparse.Namespace) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    from omegaconf import open_dict

    from selfsup_vis.config import compose
    from selfsup_vis.tasks.common import run_task

    class Collect(logging.Handler):  # the callbacks' own "N snapshot(s) ... took X s" lines
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    lines: list[str] = []
    base_log = logging.getLogger("selfsup_vis.callbacks.base")
    base_log.setLevel(logging.INFO)
    base_log.addHandler(Collect())
    out = Path(args.out)
    overrides = ["task=pretrain", f"model={args.model}", "dataset=image_folder", f"dataset.root={args.root}",
                 f"trainer.max_epochs={args.epochs}", f"callbacks={args.worker}",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 "log_level=WARNING", *args.overrides]
    if args.worker == "none":  # overrides of the default callbacks' knobs do not apply
        overrides = [o for o in overrides if not o.startswith("callbacks.")]
    cfg = compose(overrides, run_dir=out)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    with open_dict(cfg.trainer):  # the schema has no profiler: the benchmark's own addition
        cfg.trainer.profiler = {"_target_": "pytorch_lightning.profilers.SimpleProfiler",
                                "dirpath": str(out), "filename": "profile"}
    cpu0 = cpu_seconds()
    run_task(cfg)
    cpu = cpu_seconds() - cpu0
    summary = json.loads((out / "summary.json").read_text())
    profile = parse_profile(out / "fit-profile.txt")
    pngs = {d.name: len(list(d.glob("*.png"))) for d in out.iterdir() if d.is_dir() and list(d.glob("*.png"))}
    print("RESULT " + json.dumps({"fit_seconds": summary["fit_seconds"], "steps": summary["global_step"],
                                  "task_cpu_seconds": cpu,
                                  "callbacks": profile, "pngs": pngs,
                                  "snapshots": [ln for ln in lines if "snapshot(s)" in ln]}), flush=True)
    return 0


# --------------------------------------------------------------------------- the comparison
def run_one(variant: str, args: argparse.Namespace, root: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--root", str(root), "--out", str(out),
           "--epochs", str(args.epochs), "--model", args.model, "--", *args.overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"the {variant} run failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_seconds"] = wall
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="an image folder <root>/<class>/<image> (default: synthetic PNGs)")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--model", default="mae_tiny", help="task=pretrain's default model")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory(prefix="bench_callbacks_") as tmp:
        tmp_path = Path(tmp)
        root = Path(args.root) if args.root else make_folder(tmp_path / "images", args.images, 4, args.image_size)
        n_files = sum(1 for p in root.rglob("*") if p.is_file())
        print(f"{n_files} images in {root}, model={args.model}, {args.epochs} epochs, {cpus()} usable CPUs, "
              f"load average before {loadavg()}", flush=True)
        results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for variant in VARIANTS:
                res = run_one(variant, args, root, tmp_path / f"{variant}_{r}")
                results[variant].append(res)
                print(f"  round {r} callbacks={variant:7s} fit {res['fit_seconds']:7.2f} s "
                      f"({res['steps']} steps; task CPU {res['task_cpu_seconds']:.1f} s; "
                      f"process {res['process_seconds']:.1f} s wall)", flush=True)
        load_after = loadavg()

    fit = {v: statistics.median(r["fit_seconds"] for r in results[v]) for v in VARIANTS}
    ratio = fit["default"] / fit["none"]
    print(f"\nfit time, median of {args.rounds} round(s): callbacks=none {fit['none']:.2f} s, "
          f"callbacks=default {fit['default']:.2f} s -> ratio {ratio:.3f} "
          f"(+{100 * (ratio - 1):.1f} %)")
    cpu = {v: statistics.median(r["task_cpu_seconds"] for r in results[v]) for v in VARIANTS}
    print(f"CPU time of the whole task (model, data, fit, report; less sensitive to other jobs): "
          f"none {cpu['none']:.1f} s, default {cpu['default']:.1f} s -> ratio {cpu['default'] / cpu['none']:.3f}")
    print(f"load average after {load_after}")
    last = results["default"][-1]
    per = sorted(last["callbacks"].items(), key=lambda kv: -kv[1])
    if per:
        print("\nper-callback hook time (SimpleProfiler, last default round):")
        for name, sec in per:
            print(f"  {name:28s} {sec:7.2f} s")
    for line in last["snapshots"]:
        print("  " + line)
    if last["pngs"]:
        print("figures written: " + ", ".join(f"{k} {n}" for k, n in sorted(last["pngs"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
