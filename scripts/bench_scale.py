#!/usr/bin/env python
"""Benchmark: ``task=tsne task.features=<file.npy>`` end to end at N = 50k / 200k / 1M × 2048.

For every N a synthetic clustered mixture (``embedding/synthetic.py``'s model: super-classes,
low-rank class spread, noise, a random ReLU read-out) is generated in chunks into a ``.npy`` on
disk (not timed), then the real task runs in this process: features on disk → PCA on a sample
→ kNN → affinities → optimisation → quality (seeded subsample, bootstrap intervals) → figure
(PNG + PDF) → CSV / summary. A sampling thread reads this process's RSS every 20 ms; every
phase the task or the large-N path logs ("X ..." / "X done in") gets its time and peak RSS.

Beside it, in the same run: openTSNE's defaults after PCA-50 (``openTSNE.TSNE().fit``, features
in memory) at N <= ``--opentsne-max`` and, at N <= ``--default-max``, our in-memory default path
(``task.large_n=null``, the default for N < task.large_n). All quality numbers come from the same seeded
20 000-point subsample, so they are comparable. "cpu" is the process's user+sys seconds (all
threads; the machine is shared, so it is steadier than wall time).

Above ``task.embed_sample`` rows (default 250 000) only a seeded sample is optimised and the
rest is placed; the row then shows optimised/placed counts and the 2-D kNN@10 of the placed
points alone vs the optimised points alone (same subsample), and a last table sums it up.

    python scripts/bench_scale.py                         # 50k, 200k, 1M (1M needs ~17 GB free)
    python scripts/bench_scale.py --sizes 50000 --quick   # smaller smoke run
    python scripts/bench_scale.py --sizes 1000000 --opentsne-max 0 --workdir /data/tmp
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from selfsup_vis.config import compose  # noqa: E402
from selfsup_vis.embedding.backends import EmbedParams, compute_embedding  # noqa: E402
from selfsup_vis.embedding.sampled_quality import sampled_quality  # noqa: E402
from selfsup_vis.embedding.space import to_metric_space  # noqa: E402
from selfsup_vis.features.external import FeatureShards  # noqa: E402
from selfsup_vis.tasks.common import run_task  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PhaseMonitor(logging.Handler):
    """Times the phases the task logs and samples the peak RSS inside each (innermost wins)."""

    START = re.compile(r"^(.*) \.\.\.$")
    END = re.compile(r"^(.*) done in [0-9.]+ s$")

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(logging.INFO)
        self.stack: list[list] = []  # [name, start, peak, cpu start]
        self.done: list[dict] = []
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.is_set():
            r = rss_bytes()
            self.peak_total = max(self.peak_total, r)
            for entry in self.stack:
                entry[2] = max(entry[2], r)
            time.sleep(interval)

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if m := self.END.match(msg):
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i][0] == m.group(1):
                    name, start, peak, cpu = self.stack.pop(i)
                    self.done.append({"phase": name, "s": time.perf_counter() - start,
                                      "cpu_s": time.process_time() - cpu,
                                      "peak_rss_gb": max(peak, rss_bytes()) / 1e9, "depth": i})
                    break
        elif m := self.START.match(msg):
            self.stack.append([m.group(1), time.perf_counter(), rss_bytes(), time.process_time()])

    def close(self) -> None:
        self._stop.set()
        super().close()


def write_mixture(path: Path, n: int, dim: int, n_classes: int, seed: int, chunk: int = 32_768) -> Path:
    """``make_clustered_features``'s model (same defaults), drawn chunk by chunk into a .npy."""
    labels_path = path.with_name(path.stem + "_labels.npy")
    if path.is_file() and labels_path.is_file() and np.load(path, mmap_mode="r").shape == (n, dim):
        return labels_path
    latent_dim, class_rank, class_sep, noise, n_super = 64, 6, 0.15, 2.5, 10
    rng = np.random.default_rng(seed)
    n_super = max(1, min(n_super, n_classes))
    centres = rng.normal(0.0, 1.0, (n_super, latent_dim))[np.arange(n_classes) % n_super]
    centres = centres + rng.normal(0.0, class_sep, (n_classes, latent_dim))
    bases = rng.normal(0.0, 2 * class_sep / np.sqrt(class_rank), (n_classes, class_rank, latent_dim))
    mixing = rng.normal(0.0, 1.0 / np.sqrt(latent_dim), (latent_dim, dim)).astype(np.float32)
    labels = rng.permutation(np.arange(n) % n_classes)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        crng = np.random.default_rng([seed, start])
        latent = (centres[lab] + np.einsum("nr,nrd->nd", crng.normal(size=(lab.size, class_rank)), bases[lab])
                  + crng.normal(0.0, noise * class_sep, (lab.size, latent_dim)))
        block = latent.astype(np.float32) @ mixing
        np.maximum(block, 0.0, out=block)
        out[start : start + lab.size] = block
    out.flush()
    del out
    np.save(labels_path, labels.astype(np.int64))
    return labels_path


def load_and_mem() -> str:
    la = os.getloadavg()
    avail = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                avail = f"{int(line.split()[1]) / 1e6:.1f} GB"
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, memory available {avail}"


def run_ours(feats: Path, labels: Path, out: Path, extra: list[str]) -> tuple[dict, PhaseMonitor, float]:
    cfg = compose(["task=tsne", f"task.features={feats}", f"task.labels={labels}",
                   "task.formats=[png,pdf]", "logger=none", "task.overwrite=true", *extra], run_dir=out)
    mon = PhaseMonitor()
    root = logging.getLogger("selfsup_vis")
    root.addHandler(mon)
    start = time.perf_counter()
    try:
        summary = run_task(cfg)
    finally:
        root.removeHandler(mon)
        mon.close()
    return summary, mon, time.perf_counter() - start


def run_opentsne_defaults(feats: Path, seed: int, n_jobs: int) -> tuple[np.ndarray, float, float, float]:
    """openTSNE's defaults after PCA-50, features in memory (cosine space, as ours)."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    start, r0, c0 = time.perf_counter(), rss_bytes(), time.process_time()
    x = to_metric_space(np.load(feats), "cosine")
    x50 = PCA(50, svd_solver="randomized", random_state=seed).fit_transform(x)
    del x
    coords = np.asarray(TSNE(n_jobs=n_jobs, random_state=seed).fit(x50.astype(np.float64)), dtype=np.float32)
    return coords, time.perf_counter() - start, (rss_bytes() - r0) / 1e9, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/selfsup_vis_bench_scale"))
    ap.add_argument("--opentsne-max", type=int, default=200_000, help="openTSNE defaults up to this N")
    ap.add_argument("--default-max", type=int, default=50_000, help="our in-memory default up to this N")
    ap.add_argument("--quality-sample", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated .npy files")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=20000, 256-d")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--override", action="append", default=[], help="extra task override for ours")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.dim = [20_000], 256
    logging.basicConfig(level=logging.WARNING)
    cpus = len(os.sched_getaffinity(0))
    print(f"bench_scale: D={args.dim}, {args.classes} classes, {cpus} cpus; {load_and_mem()}", flush=True)
    rows = []
    args.workdir.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        feats = args.workdir / f"mixture_{n}x{args.dim}.npy"
        t0 = time.perf_counter()
        labels_path = write_mixture(feats, n, args.dim, args.classes, args.seed)
        fbytes = feats.stat().st_size
        print(f"\nN={n} D={args.dim}: features {fbytes / 1e9:.2f} GB on disk (generated in "
              f"{time.perf_counter() - t0:.0f} s, not timed); {load_and_mem()}", flush=True)
        labels = np.load(labels_path)
        q = {"seed": args.seed, "sample": args.quality_sample, "n_boot": 200}
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = args.workdir / f"run_{n}"
        shutil.rmtree(out, ignore_errors=True)
        cpu0 = time.process_time()
        summary, mon, wall = run_ours(feats, labels_path, out, [f"task.quality_sample={args.quality_sample}",
                                                                f"task.n_jobs={args.n_jobs}", "task.large_n=0",
                                                                *args.override])
        cpu = time.process_time() - cpu0
        info = summary["layers"][next(iter(summary["layers"]))]
        qual = info["quality"]
        row = {"n": n, "dim": args.dim, "feature_gb": fbytes / 1e9, "wall_s": wall, "cpu_s": cpu,
               "peak_rss_gb": mon.peak_total / 1e9, "process_maxrss_gb_before": base / 1e9,
               "phases": mon.done, "quality": {k: qual.get(k) for k in ("trustworthiness", "knn_2d@10",
                                                                        "knn_feat@10", "trustworthiness_ci95",
                                                                        "knn_2d@10_ci95")},
               "pdf_kb": (out / f"tsne_{feats.stem}.pdf").stat().st_size / 1e3,
               "optimised_n": info["embedding"]["large"].get("optimised_n", n),
               "placed_n": info["embedding"]["large"].get("placed_n", 0),
               "knn_2d@10_placed": qual.get("knn_2d@10_placed"), "knn_2d@10_optimised": qual.get("knn_2d@10_optimised"),
               "load": os.getloadavg()}
        print(f"  ours (task=tsne task.features=..., memory-bounded path): {wall:7.1f} s wall, {cpu:7.1f} s cpu (user+sys), "
              f"peak RSS {row['peak_rss_gb']:.2f} GB (budget features + 4 GB = {fbytes / 1e9 + 4:.2f} GB)")
        for ph in mon.done:
            print(f"    {'  ' * ph['depth']}{ph['phase'][:64]:66s} {ph['s']:7.1f} s {ph['cpu_s']:7.1f} s cpu  "
                  f"peak RSS {ph['peak_rss_gb']:.2f} GB")
        print(f"    quality: trust {qual['trustworthiness']:.4f} {qual.get('trustworthiness_ci95')}  knn2d@10 "
              f"{qual.get('knn_2d@10', float('nan')):.4f} {qual.get('knn_2d@10_ci95')}  PDF {row['pdf_kb']:.0f} kB",
              flush=True)
        if row["placed_n"]:
            print(f"    optimised {row['optimised_n']} / placed {row['placed_n']} (task.embed_sample): knn2d@10 placed "
                  f"{row['knn_2d@10_placed']:.4f} {qual.get('knn_2d@10_placed_ci95')}  optimised "
                  f"{row['knn_2d@10_optimised']:.4f} {qual.get('knn_2d@10_optimised_ci95')}", flush=True)
        coords = np.load(out / f"embedding_{feats.stem}.npy")
        if n <= args.default_max:
            t1, c1 = time.perf_counter(), time.process_time()
            ref = compute_embedding(FeatureShards(feats).load(), EmbedParams(seed=args.seed, large_n=None,
                                                                             n_jobs=args.n_jobs))
            sec, dcpu = time.perf_counter() - t1, time.process_time() - c1
            rq = sampled_quality(np.load(feats, mmap_mode="r"), ref.coords, labels, **q)
            row["default_in_memory"] = {"s": sec, "cpu_s": dcpu, "embedding_s": ref.seconds, "trustworthiness": rq["trustworthiness"],
                                        "knn_2d@10": rq["knn_2d@10"]}
            print(f"  in-memory default path (N < large_n): embedding {ref.seconds:7.1f} s ({dcpu:.1f} s cpu)   trust {rq['trustworthiness']:.4f}"
                  f"  knn2d@10 {rq['knn_2d@10']:.4f}   => ours - default: trust "
                  f"{qual['trustworthiness'] - rq['trustworthiness']:+.4f}, knn2d "
                  f"{qual['knn_2d@10'] - rq['knn_2d@10']:+.4f} (target within 0.005)", flush=True)
        if n <= args.opentsne_max:
            c, sec, grow, ocpu = run_opentsne_defaults(feats, args.seed, args.n_jobs)
            oq = sampled_quality(np.load(feats, mmap_mode="r"), c, labels, **q)
            row["opentsne_defaults"] = {"s": sec, "cpu_s": ocpu, "rss_growth_gb": grow, "trustworthiness": oq["trustworthiness"],
                                        "knn_2d@10": oq["knn_2d@10"]}
            print(f"  openTSNE defaults (PCA-50, in memory):   {sec:7.1f} s wall ({ocpu:.1f} s cpu)   trust {oq['trustworthiness']:.4f}  "
                  f"knn2d@10 {oq['knn_2d@10']:.4f}   (ours: {wall:.1f} s end to end)", flush=True)
        del coords
        row["load_after"] = os.getloadavg()
        rows.append(row)
        if not args.keep:
            feats.unlink(missing_ok=True)
            labels_path.unlink(missing_ok=True)
    print(f"\n{'N':>9} {'wall s':>7} {'cpu s':>7} {'RSS GB':>7} {'budget':>7} {'trust':>7} {'knn2d':>7} "
          f"{'optimised':>10} {'placed':>8} {'kNN placed':>10} {'kNN optim.':>10}")
    for r in rows:
        q = r["quality"]
        print(f"{r['n']:>9} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['peak_rss_gb']:7.2f} {r['feature_gb'] + 4:7.2f} "
              f"{q['trustworthiness']:7.4f} {q['knn_2d@10']:7.4f} {r['optimised_n']:>10} {r['placed_n']:>8} "
              + (f"{r['knn_2d@10_placed']:10.4f} {r['knn_2d@10_optimised']:10.4f}" if r["placed_n"] else f"{'-':>10} {'-':>10}"))
    print(f"\n{load_and_mem()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
