#!/usr/bin/env python
"""Benchmark the GPU-native paths of issue 23 in one run, on one machine, and write the table.

1. extraction img/s from JPEG files on disk (ImageNet-like 500×375, eval pipeline to 224 px):
   GPU decode (``data.gpu_decode``: workers read bytes, nvJPEG batch decode + resize/crop/
   normalise on the device) vs CPU decode (PIL in the DataLoader workers) vs the bare forward on
   in-memory tensors, for ResNet-50 and ViT-B/16 (timm, random weights; bf16 autocast and
   channels_last on CUDA, fp32 on the CPU). DataLoader + model forward, no Lightning around it.
2. t-SNE of a clustered mixture (``embedding.synthetic``, 100 classes, ``--dim`` features) at each
   ``--tsne-n``: wall time end to end (PCA + kNN + affinities + optimisation), trust@10 and
   2-D kNN@10 (``embedding.quality``) for ``backend=torch`` on ``--device`` vs the openTSNE
   default (``backend=opentsne``, the CPU cores; above 100k its large-N path) on the same machine.
3. ``--crossover``: seconds per repulsion evaluation, exact tiles vs FFT grid, at several N on
   ``--device`` (the numbers behind ``tsne_torch.EXACT_MAX_N``).

    python scripts/bench_gpu.py                                   # on a GPU: the full run
    python scripts/bench_gpu.py --device cpu --n-extract 64 --tsne-n 2000 --models resnet18 \\
        --img-size 64 --crossover                                 # small, on the CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_jpegs(root: Path, n: int, size: tuple[int, int] = (500, 375), classes: int = 8) -> None:
    """``n`` JPEGs (quality 90) of synthetic shapes×textures at ``size``, in class folders."""
    from PIL import Image

    from selfsup_vis.data.synthetic import SyntheticShapes

    ds = SyntheticShapes("train", classes, 128, samples_per_class=(n + classes - 1) // classes)
    for i in range(n):
        d = root / ds.classes[ds.labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        ds.load_image(i).resize(size, Image.BICUBIC).save(d / f"{i:06d}.jpg", quality=90)


def _model(name: str, device: torch.device) -> torch.nn.Module:
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _forward(model, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)
    return model(x)


@torch.no_grad()
def bench_extraction(args, device: torch.device) -> list[dict]:
    from torch.utils.data import DataLoader

    from selfsup_vis.data.base import collate_skip_none
    from selfsup_vis.data.folders import image_folder_dataset
    from selfsup_vis.data.gpu_decode import (
        EncodedImageDataset,
        collate_encoded,
        decode_batch,
        eval_spec,
    )
    from selfsup_vis.data.transforms import build_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        t = time.perf_counter()
        write_jpegs(root, args.n_extract)
        print(f"wrote {args.n_extract} JPEGs in {time.perf_counter() - t:.1f} s", flush=True)
        pipeline = build_pipeline("eval", args.img_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                  crop_pct=0.875)
        spec = eval_spec(pipeline)
        base = image_folder_dataset(root, pipeline)
        loader_kw = {"batch_size": args.batch_size, "num_workers": args.workers,
                     "pin_memory": device.type == "cuda", "persistent_workers": False}
        for name in args.models:
            model = _model(name, device)
            x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
            for _ in range(2):
                _forward(model, x, device)
            _sync(device)
            steps = max(1, args.n_extract // args.batch_size)
            t = time.perf_counter()
            for _ in range(steps):
                _forward(model, x, device)
            _sync(device)
            bare = steps * args.batch_size / (time.perf_counter() - t)
            result = {"model": name, "bare": bare}
            for mode in ("gpu", "cpu"):
                if mode == "gpu":
                    loader = DataLoader(EncodedImageDataset(base), collate_fn=collate_encoded, **loader_kw)
                else:
                    loader = DataLoader(base, collate_fn=collate_skip_none, **loader_kw)
                n = 0
                t = time.perf_counter()
                for batch in loader:
                    if mode == "gpu":
                        images = decode_batch(batch, spec, device, fallback=base)
                    else:
                        images = batch["image"].to(device, non_blocking=True)
                    _forward(model, images, device)
                    n += images.shape[0]
                _sync(device)
                result[mode] = n / (time.perf_counter() - t)
            print(f"{name}: GPU decode {result['gpu']:.0f} img/s, CPU decode {result['cpu']:.0f}, "
                  f"bare forward {bare:.0f}", flush=True)
            rows.append(result)
            del model
    return rows


def bench_tsne(args, device: torch.device) -> list[dict]:
    from selfsup_vis.embedding.backends import EmbedParams, compute_embedding
    from selfsup_vis.embedding.quality import embedding_quality
    from selfsup_vis.embedding.synthetic import make_clustered_features

    rows = []
    for n in args.tsne_n:
        t = time.perf_counter()
        x, labels = make_clustered_features(n, dim=args.dim, n_classes=100, seed=0)
        print(f"t-SNE data {n} × {args.dim} made in {time.perf_counter() - t:.1f} s", flush=True)
        runs = [("torch", EmbedParams(backend="torch", extra={"device": str(device)}))]
        if not args.skip_opentsne:
            runs.append(("opentsne", EmbedParams(backend="opentsne")))
        for name, params in runs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            res = compute_embedding(x, params)
            seconds = time.perf_counter() - t
            q = embedding_quality(x, res.coords, labels, seed=0, ks=(10,))
            peak = (torch.cuda.max_memory_allocated(device) / 2**30
                    if device.type == "cuda" and name == "torch" else None)
            where = f"{device}" if name == "torch" else f"{os.cpu_count()} CPU cores"
            info = res.params.get("torch", {})
            row = {"n": n, "backend": name, "where": where, "seconds": seconds,
                   "trust": q["trustworthiness"], "knn2d": q["knn_2d@10"], "peak_gib": peak,
                   "repulsion": info.get("repulsion", "fft" if n >= 1000 else "bh"),
                   "timings": info.get("timings")}
            print(f"t-SNE {n}: {name} on {where}: {seconds:.1f} s, trust@10 {row['trust']:.4f}, "
                  f"2-D kNN@10 {row['knn2d']:.4f}" + (f", peak {peak:.1f} GiB" if peak else "")
                  + (f", phases {row['timings']}" if row["timings"] else ""), flush=True)
            rows.append(row)
        del x
    return rows


def bench_crossover(device: torch.device, ns: list[int]) -> list[dict]:
    from selfsup_vis.embedding.tsne_torch import repulsive_exact, repulsive_fft

    rows = []
    for n in ns:
        rng = np.random.default_rng(0)
        # a t-SNE-like extent: clusters spread over ~sqrt(n) units
        y = torch.as_tensor(rng.normal(size=(n, 2)) * max(5.0, np.sqrt(n) / 3), dtype=torch.float32,
                            device=device)
        out = {"n": n}
        for name, fn in (("exact", repulsive_exact), ("fft", repulsive_fft)):
            fn(y)
            _sync(device)
            reps = 3
            t = time.perf_counter()
            for _ in range(reps):
                fn(y)
            _sync(device)
            out[name] = (time.perf_counter() - t) / reps
        print(f"crossover n={n}: exact {out['exact'] * 1e3:.2f} ms, fft {out['fft'] * 1e3:.2f} ms", flush=True)
        rows.append(out)
    return rows


def markdown(device: torch.device, extraction: list[dict], tsne: list[dict], cross: list[dict]) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"Measured by `scripts/bench_gpu.py` on {name} ({os.cpu_count()} CPU cores).", ""]
    if extraction:
        lines += ["| extraction from JPEG (img/s) | GPU decode | CPU decode (PIL workers) | bare forward | GPU/bare |",
                  "|---|---|---|---|---|"]
        for r in extraction:
            lines.append(f"| {r['model']} | {r['gpu']:.0f} | {r['cpu']:.0f} | {r['bare']:.0f} | "
                         f"{r['gpu'] / r['bare']:.2f} |")
        lines.append("")
    if tsne:
        lines += ["| t-SNE | backend | where | seconds | trust@10 | 2-D kNN@10 | peak GPU GiB |",
                  "|---|---|---|---|---|---|---|"]
        for r in tsne:
            peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
            lines.append(f"| {r['n']:,} × {r.get('dim', '')} | {r['backend']} | {r['where']} | "
                         f"{r['seconds']:.1f} | {r['trust']:.4f} | {r['knn2d']:.4f} | {peak} |")
        lines.append("")
    if cross:
        lines += ["| repulsion, one evaluation | exact tiles (ms) | FFT grid (ms) |", "|---|---|---|"]
        lines += [f"| N = {r['n']:,} | {r['exact'] * 1e3:.2f} | {r['fft'] * 1e3:.2f} |" for r in cross]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="*", default=["resnet50", "vit_base_patch16_224"])
    ap.add_argument("--n-extract", type=int, default=None, help="JPEGs to extract (cuda 8192, cpu 64)")
    ap.add_argument("--batch-size", type=int, default=None, help="cuda 256, cpu 16")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--tsne-n", type=int, nargs="*", default=None, help="cuda: 50000 1000000; cpu: 2000")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--skip-opentsne", action="store_true")
    ap.add_argument("--crossover", action="store_true", help="also time exact vs FFT repulsion")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.n_extract = args.n_extract or (8192 if gpu else 64)
    args.batch_size = args.batch_size or (256 if gpu else 16)
    args.tsne_n = args.tsne_n if args.tsne_n is not None else ([50_000, 1_000_000] if gpu else [2_000])
    extraction = bench_extraction(args, device) if args.models and args.n_extract else []
    tsne = bench_tsne(args, device)
    for r in tsne:
        r["dim"] = args.dim
    cross_ns = ([1_000, 4_000, 16_000, 32_000, 64_000] if gpu else [250, 500, 1_000, 2_000, 4_000])
    cross = bench_crossover(device, cross_ns) if args.crossover else []
    table = markdown(device, extraction, tsne, cross)
    print("\n" + table)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(table)
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
