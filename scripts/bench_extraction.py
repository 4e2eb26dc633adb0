#!/usr/bin/env python
"""Benchmark the t-SNE task's feature extraction, side by side in one run.

1. speed: images/s of our extraction phase (Trainer.predict over PNG files on disk, eval
   pipeline, shard writer, merge) vs the bare model forward on in-memory tensors, same model
   and batch size → ratio (target ≥ 0.9).
2. memory: peak RSS of the extraction at two dataset sizes (synthetic data, a subprocess
   each) → growth vs the bytes of the features themselves (streamed to disk, so ~0).
3. cache: two `task=tsne` runs that differ only in the perplexity; the second extracts nothing.

    python scripts/bench_extraction.py                    # resnet50 @ 224 px, 512 images
    python scripts/bench_extraction.py --model mocov2_tiny --img-size 64 --n-speed 2048
    python scripts/bench_extraction.py --device cuda --precision bf16-mixed   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write_images(root: Path, n: int, size: int, classes: int = 8) -> None:
    from selfsup_vis.data.synthetic import SyntheticShapes

    ds = SyntheticShapes("train", classes, size, samples_per_class=(n + classes - 1) // classes)
    for i in range(n):
        d = root / ds.classes[ds.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        ds.load_image(i).save(d / f"{i:06d}.png")


def bench_speed(args) -> dict:
    import numpy as np
    import pytorch_lightning as pl
    import torch

    from selfsup_vis.config import compose
    from selfsup_vis.data.datamodule import ImageFolderDataModule
    from selfsup_vis.data.transforms import pipeline_for_model
    from selfsup_vis.features.extraction import FeatureShardWriter, extract_features
    from selfsup_vis.models import build_model

    cfg = compose([f"model={args.model}", f"model.img_size={args.img_size}"])
    model = build_model(cfg.model).eval().to(args.device)
    layers = model.default_layers()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        _write_images(root, args.n_speed, args.img_size)
        dm = ImageFolderDataModule(str(root), batch_size=args.batch_size, num_workers=args.num_workers,
                                   pin_memory=args.device == "cuda")
        n = len(dm.dataset(dm.eval_split))
        dm.configure(eval=pipeline_for_model(cfg.model, "eval", crop_pct=None), predict_indices=range(n))
        # bare forward: the same number of images as in-memory normalised tensors
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
        autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled="bf16" in args.precision)
        with torch.inference_mode(), autocast:
            model.extract_features(x, layers)  # warm-up
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(int(np.ceil(n / args.batch_size))):
                model.extract_features(x, layers)
            if args.device == "cuda":
                torch.cuda.synchronize()
            bare = n / (time.perf_counter() - t0)
        writer = FeatureShardWriter(Path(tmp) / "work", range(n))
        trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                             precision=args.precision, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False, callbacks=[writer])
        t0 = time.perf_counter()
        extract_features(trainer, model, dm, writer, layers, Path(tmp) / "feats")
        ours = n / (time.perf_counter() - t0)
    return {"model": args.model, "img_size": args.img_size, "batch_size": args.batch_size, "n": n,
            "bare_forward_img_s": bare, "extraction_img_s": ours, "ratio": ours / bare}


def _peak_rss_child(n_per_class: int) -> None:
    """Subprocess body: extract features of the synthetic data, print peak RSS and feature bytes."""
    import numpy as np
    import pytorch_lightning as pl

    from selfsup_vis.config import compose
    from selfsup_vis.data.datamodule import SyntheticDataModule
    from selfsup_vis.data.transforms import pipeline_for_model
    from selfsup_vis.features.extraction import FeatureShardWriter, extract_features
    from selfsup_vis.models import build_model

    cfg = compose(["model=mocov2_tiny"])
    model = build_model(cfg.model).eval()
    layers = ["layer3", "layer4", "neck"]
    dm = SyntheticDataModule(samples_per_class=n_per_class, batch_size=128, eval_split="train")
    n = len(dm.dataset("train"))
    dm.configure(eval=pipeline_for_model(cfg.model, "eval", crop_pct=None), predict_indices=range(n))
    with tempfile.TemporaryDirectory() as tmp:
        writer = FeatureShardWriter(Path(tmp) / "w", range(n))
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False, callbacks=[writer])
        paths = extract_features(trainer, model, dm, writer, layers, Path(tmp) / "f")
        feat_bytes = sum(np.load(p, mmap_mode="r").nbytes for p in paths.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": n, "peak_rss": peak, "feature_bytes": feat_bytes}))


def bench_memory(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--_rss-child", str(n // 8)], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def bench_cache(tmp: Path) -> list[float]:
    times = []
    for perplexity in (30, 10):
        run = tmp / f"p{perplexity}"
        subprocess.run(
            [sys.executable, "-m", "selfsup_vis", "task=tsne", "model=mocov2_tiny", "task.backend=pca",
             f"task.perplexity={perplexity}", "task.projector=false", "logger=none", f"hydra.run.dir={run}"],
            check=True, capture_output=True, env={**os.environ, "SELFSUP_VIS_CACHE": str(tmp / "cache")},
        )
        times.append(json.loads((run / "summary.json").read_text())["timings"]["extraction_s"])
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="mocov2_r50")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-speed", type=int, default=512)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--memory-sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "memory", "cache"])
    ap.add_argument("--_rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._rss_child:
        _peak_rss_child(args._rss_child)
        return 0
    if "speed" not in args.skip:
        s = bench_speed(args)
        print(f"speed  {s['model']} {s['img_size']}px batch {s['batch_size']}, {s['n']} images on {args.device} "
              f"({args.precision}): bare forward {s['bare_forward_img_s']:.1f} img/s, extraction "
              f"{s['extraction_img_s']:.1f} img/s, ratio {s['ratio']:.3f}")
    if "memory" not in args.skip:
        rows = bench_memory(args.memory_sizes)
        for r in rows:
            print(f"memory N={r['n']}: peak RSS {r['peak_rss'] / 2**20:.0f} MiB, features {r['feature_bytes'] / 2**20:.1f} MiB")
        if len(rows) >= 2:
            d_rss = rows[-1]["peak_rss"] - rows[0]["peak_rss"]
            d_feat = rows[-1]["feature_bytes"] - rows[0]["feature_bytes"]
            print(f"memory growth N={rows[0]['n']}→{rows[-1]['n']}: RSS +{d_rss / 2**20:.1f} MiB "
                  f"vs feature bytes +{d_feat / 2**20:.1f} MiB (ratio {d_rss / max(d_feat, 1):.2f})")
    if "cache" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            first, second = bench_cache(Path(tmp))
        print(f"cache  extraction {first:.2f} s on the first run, {second:.2f} s on a second run with another perplexity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
