"""make demo: every task on the embedded synthetic data, in ONE process (torch, Lightning and
timm are imported once instead of once per step), outputs under ``$DEMO_DIR``.

Each step is composed exactly as ``python -m selfsup_vis <overrides>`` would compose it
(``selfsup_vis.config.compose``) and run through the same harness (``run_task``), so every run
directory has its figures, ``summary.json`` and ``report.html``. The step's equivalent command
line is printed before it runs; the time of each step and of the whole demo after it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

from omegaconf import open_dict  # noqa: E402

from selfsup_vis.config import compose  # noqa: E402

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def steps(out: Path) -> list[tuple[str, list[str]]]:
    """(run dir name, overrides) in the order a first-time user wants to see them: a figure of
    what the pipeline feeds the model first, training last among the quick ones."""
    mae = out / "pretrain_mae" / "checkpoints" / "last.ckpt"
    cls = out / "pretrain_classifier" / "checkpoints" / "last.ckpt"
    return [
        ("browse_mocov2", ["task=browse", "model=mocov2_tiny", "task.n_samples=6"]),
        ("browse_simmim", ["task=browse", "model=simmim_tiny", "task.n_samples=6"]),
        ("tsne", ["task=tsne", "model=mocov2_tiny", "task.layers=[layer2,layer4,neck]"]),
        ("shape_bias", ["task=shape_bias"]),
        ("plot_shape_bias", ["task=plot_shape_bias", f"task.csv_dirs=[{out / 'shape_bias'}]"]),
        # a tiny MAE trained in front of you, then what it reconstructs, separates and attends to
        ("pretrain_mae", ["task=pretrain", "model=mae_tiny", "trainer.max_epochs=24",
                          "dataset.batch_size=16", "model.optimizer.lr=3e-3",
                          # reconstructions as it learns; the other snapshots of the final state
                          "callbacks.reconstruction.every_n_steps=null",
                          "callbacks.reconstruction.every_n_epochs=8",
                          "callbacks.reconstruction.min_interval_s=0"]),
        ("reconstruct_mae", ["task=reconstruct", "model=mae_tiny", f"model.checkpoint={mae}"]),
        ("tsne_mae", ["task=tsne", "model=mae_tiny", f"model.checkpoint={mae}"]),
        ("compare_mae", ["task=compare_embeddings", "model=mae_tiny", f"task.checkpoints=[null,{mae}]",
                         "task.layers=[block0,block1,block2,block3,norm]", "task.baselines=[pixels]"]),
        ("dense_mae", ["task=dense", "model=mae_tiny", f"model.checkpoint={mae}"]),
        ("attention_mae", ["task=attention", "model=mae_tiny", f"model.checkpoint={mae}"]),
        ("attention_mae_rollout", ["task=attention", "model=mae_tiny", f"model.checkpoint={mae}",
                                   "task.method=rollout"]),
        ("reconstruct_simmim_untrained", ["task=reconstruct", "model=simmim_tiny"]),
        ("reconstruct_maskfeat_untrained", ["task=reconstruct", "model=maskfeat_tiny"]),
        # Grad-CAM of a tiny classifier trained on silhouettes, scored by the pointing game
        ("pretrain_classifier", ["task=pretrain", "model=classifier_tiny", "model.num_classes=8",
                                 "dataset.train_split=shape_only", "dataset.eval_split=shape_only",
                                 "trainer.max_epochs=4", "callbacks.embedding=null",
                                 "callbacks.reconstruction=null", "callbacks.dense=null"]),
        ("attention_gradcam", ["task=attention", "model=classifier_tiny", "model.num_classes=8",
                               f"model.checkpoint={cls}", "task.method=gradcampp",
                               "task.target_layers=[layer2,layer3]", "task.split=shape_only",
                               "task.tolerance=3", "task.max_images=16"]),
    ]


def main() -> int:
    out = Path(os.environ.get("DEMO_DIR", "demo_outputs")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from selfsup_vis.tasks.common import run_task  # torch, Lightning, timm: imported once, here

    start = time.perf_counter()
    for name, overrides in steps(out):
        run_dir = out / name
        print(f"+ selfsup_vis {' '.join(overrides)} hydra.run.dir={run_dir}", flush=True)
        t0 = time.perf_counter()
        cfg = compose([*overrides, *QUIET, "task.overwrite=true"], run_dir=run_dir)  # a rerun replaces the last demo
        with open_dict(cfg):
            cfg.pop("hydra", None)  # what the job sees under python -m selfsup_vis
        run_task(cfg)
        print(f"  done in {time.perf_counter() - t0:.1f} s ({time.perf_counter() - start:.0f} s so far)",
              flush=True)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Outputs in {out}/:")
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        pngs = len(list(d.rglob("*.png")))
        report = d / "report.html"
        print(f"  {d.name:32s} {pngs:3d} PNG" + (f"   {report}" if report.is_file() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
