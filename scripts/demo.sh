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

echo
echo "Demo outputs in $OUT/:"
for d in "$OUT"/*/; do echo "  $d  ($(find "$d" -name '*.png' | wc -l) PNG, summary.json)"; done
