"""Time task=compare_embeddings: 3 models × 4 layers at N images (synthetic data, tiny models).

Runs the task in-process twice, a cold run (extraction into a fresh feature cache) and a warm
run (every layer from the cache), and prints per phase the seconds of each (extraction,
embedding, CKA, whole task). The three models are mae_tiny, mocov2_tiny and maskfeat_tiny
(random weights: the timing does not depend on them), four layers each — the issue's 3 × 4
comparison, at N = 5000 by default.

    .venv/bin/python scripts/bench_compare.py --n 5000 --out /tmp/bench_compare
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup_vis.config import compose  # noqa: E402

MODELS = (("mae_tiny", "[block0,block1,block2,norm]"), ("mocov2_tiny", "[layer1,layer2,layer3,layer4]"),
          ("maskfeat_tiny", "[block0,block1,block2,norm]"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="images (synthetic val split, 8 classes)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="bench_compare_")))
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--n-jobs", type=int, default=1, help="embedding threads (1 on a shared 2-core machine)")
    args = ap.parse_args()
    os.environ["SELFSUP_VIS_CACHE"] = str(args.out / "cache")
    per_class = -(-args.n // 8)
    models = ",".join(f"{{model: {m}, layers: {la}}}" for m, la in MODELS)
    overrides = ["task=compare_embeddings", f"task.models=[{models}]", f"dataset.val_samples_per_class={per_class}",
                 f"task.max_samples_per_class={per_class}", f"task.backend={args.backend}",
                 f"task.n_jobs={args.n_jobs}", "dataset.batch_size=128", "trainer.enable_progress_bar=false",
                 "logger=csv", "task.overwrite=true"]  # a rerun replaces the last benchmark's runs
    from selfsup_vis.tasks.common import run_task

    rows = []
    for label in ("cold (extract)", "warm (cached)"):
        out = args.out / label.split()[0]
        start = time.perf_counter()
        summary = run_task(compose(overrides, run_dir=out))
        wall = time.perf_counter() - start
        rows.append((label, summary["n_samples"], summary["timings"], wall))
    print(f"\ncompare_embeddings: {len(MODELS)} models × 4 layers, backend {args.backend}, "
          f"n_jobs {args.n_jobs}, outputs in {args.out}")
    print(f"{'run':16s} {'N':>6s} {'extract s':>10s} {'embed s':>9s} {'CKA s':>7s} {'task s':>8s} {'wall s':>8s}")
    for label, n, tm, wall in rows:
        print(f"{label:16s} {n:6d} {tm['extraction_s']:10.1f} {tm['embedding_s']:9.1f} {tm['cka_s']:7.1f} "
              f"{tm['total_s']:8.1f} {wall:8.1f}")
    (args.out / "bench_compare.json").write_text(json.dumps(
        [{"run": r[0], "n": r[1], "timings": r[2], "wall_s": r[3]} for r in rows], indent=2))


if __name__ == "__main__":
    main()
