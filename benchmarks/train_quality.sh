#!/usr/bin/env bash
# The training quality bar (issue: ROC AUC >= 0.98 and TPR at FPR 1e-3 >= 0.5 on a separate simulated test set
# with hard negatives, resnet18, default config, <= 30 min on a 2-core CPU). About 25 minutes.
set -euo pipefail
OUT=${1:-bench_runs}
L=.venv/bin/lenstrt
$L simulate --n 40000 --seed 11 --out "$OUT/train40k" --shard-size 5000 -q
$L simulate --n 10000 --seed 12 --out "$OUT/test10k" --shard-size 5000 -q
time $L train --data "$OUT/train40k" --arch resnet18 --time-budget 20 --out "$OUT/run_r18" -q
$L evaluate --checkpoint "$OUT/run_r18" --data "$OUT/test10k" --out "$OUT/eval_r18" -q
