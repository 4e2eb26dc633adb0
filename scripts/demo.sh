#!/usr/bin/env bash
# make demo: every task on the embedded synthetic data, outputs under $DEMO_DIR.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${DEMO_DIR:-demo_outputs}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true MPLBACKEND=Agg
mkdir -p "$OUT"
run() { echo "+ selfsup_vis $*"; "$PY" -m selfsup_vis "$@"; }

run task=browse model=mocov2_tiny task.n_samples=6 hydra.run.dir="$OUT/browse_mocov2"
run task=browse model=simmim_tiny task.n_samples=6 hydra.run.dir="$OUT/browse_simmim"
run task=browse model=maskfeat_tiny task.n_samples=6 hydra.run.dir="$OUT/browse_maskfeat"
run task=tsne model=mocov2_tiny task.layers=[layer2,layer4,neck] hydra.run.dir="$OUT/tsne"
run task=shape_bias hydra.run.dir="$OUT/shape_bias"
run task=plot_shape_bias "task.csv_dirs=[$OUT/shape_bias]" hydra.run.dir="$OUT/plot_shape_bias"
# a tiny MAE trained in front of you (~1-2 min on 2 CPU cores), then its reconstructions
run task=pretrain model=mae_tiny trainer.max_epochs=40 dataset.batch_size=16 model.optimizer.lr=3e-3 \
    callbacks.reconstruction.every_n_epochs=10 callbacks.embedding.every_n_epochs=20 \
    trainer.enable_progress_bar=false hydra.run.dir="$OUT/pretrain_mae"
MAE_CKPT="$OUT/pretrain_mae/checkpoints/last.ckpt"
run task=reconstruct model=mae_tiny model.checkpoint="$MAE_CKPT" hydra.run.dir="$OUT/reconstruct_mae"
run task=tsne model=mae_tiny model.checkpoint="$MAE_CKPT" hydra.run.dir="$OUT/tsne_mae"
# the untrained and the trained tiny MAE side by side: aligned maps, quality by depth, CKA
run task=compare_embeddings model=mae_tiny "task.checkpoints=[null,$MAE_CKPT]" \
    task.layers=[block0,block1,block2,block3,norm] task.baselines=[pixels] hydra.run.dir="$OUT/compare_mae"
run task=reconstruct model=simmim_tiny hydra.run.dir="$OUT/reconstruct_simmim_untrained"
# where they look: the trained MAE's CLS attention per head and rollout (attention/ of the
# pretrain run shows it sharpening), and Grad-CAM of a tiny classifier trained on silhouettes,
# scored by the pointing game on the synthetic shapes' masks (summary.json)
run task=attention model=mae_tiny model.checkpoint="$MAE_CKPT" hydra.run.dir="$OUT/attention_mae"
run task=attention model=mae_tiny model.checkpoint="$MAE_CKPT" task.method=rollout hydra.run.dir="$OUT/attention_mae_rollout"
run task=pretrain model=classifier_tiny model.num_classes=8 dataset.train_split=shape_only \
    dataset.eval_split=shape_only trainer.max_epochs=4 callbacks.embedding=null callbacks.reconstruction=null \
    trainer.enable_progress_bar=false hydra.run.dir="$OUT/pretrain_classifier"
CLS_CKPT="$OUT/pretrain_classifier/checkpoints/last.ckpt"
run task=attention model=classifier_tiny model.num_classes=8 model.checkpoint="$CLS_CKPT" task.method=gradcampp \
    "task.target_layers=[layer2,layer3]" task.split=shape_only task.tolerance=3 task.max_images=16 \
    hydra.run.dir="$OUT/attention_gradcam"
run task=attention model=classifier_tiny model.num_classes=8 model.checkpoint="$CLS_CKPT" task.method=gradcam \
    task.target_category=cue-conflict task.split=conflict "task.target_layers=[layer2]" \
    hydra.run.dir="$OUT/attention_gradcam_cue_conflict"
run task=reconstruct model=maskfeat_tiny hydra.run.dir="$OUT/reconstruct_maskfeat_untrained"

echo
echo "Demo outputs in $OUT/:"
for d in "$OUT"/*/; do echo "  $d  ($(find "$d" -name '*.png' | wc -l) PNG, summary.json)"; done
# every run directory has a self-contained report.html (open it in any browser, offline)
echo
echo "Reports (self-contained HTML, open from the file system):"
for r in "$OUT"/*/report.html; do if [ -f "$r" ]; then echo "  $(cd "$(dirname "$r")" && pwd)/report.html"; fi; done
