#!/usr/bin/env bash
# The training quality bar (docs/training.md, issue #15): the documented recipe (resnet18, 20 minutes on this
# 2-core CPU) judged on a held-out set from our simulator AND on the cross-simulator set made with lenstronomy
# (benchmarks/cross_sim.py), broken down by Einstein radius, arc S/N and negative kind. About 30 minutes.
# Pass BEFORE=<an earlier OUT> to add before/after tables to both reports.
set -euo pipefail
OUT=${1:-bench_runs}
BEFORE=${BEFORE:-}
SURVEY=${SURVEY:-lsst-gri}   # lsst-gri-survey: the survey's whole population (docs/simulation.md)
L=.venv/bin/lenstrt
$L simulate --n 40000 --seed 11 --survey "$SURVEY" --out "$OUT/train40k" --shard-size 5000 -q
$L simulate --n 10000 --seed 12 --survey "$SURVEY" --out "$OUT/test10k" --shard-size 5000 -q
[ -f "$OUT/xsim10k/dataset.json" ] || .venv/bin/python benchmarks/cross_sim.py --n 10000 --seed 2026 --workers 2 \
    --out "$OUT/xsim10k"
time $L train --data "$OUT/train40k" --arch resnet18 --time-budget 20 --out "$OUT/run_r18" -q
cmp() { [ -n "$BEFORE" ] && echo "--compare $BEFORE/$1/metrics.json" || true; }
$L evaluate --checkpoint "$OUT/run_r18" --data "$OUT/test10k" --out "$OUT/eval_insim" $(cmp eval_insim) -q
$L evaluate --checkpoint "$OUT/run_r18" --data "$OUT/xsim10k" --out "$OUT/eval_xsim" $(cmp eval_xsim) --bar -q
