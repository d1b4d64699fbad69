#!/usr/bin/env bash
# `make demo`: the whole pipeline on built-in simulated data, on the CPU, in a few minutes.
set -euo pipefail
OUT=${1:-demo_out}
L=.venv/bin/lenstrt
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "environment"
$L info

step "simulate: training set and a separate test set (LSST-like g,r,i, 64x64, half lenses)"
$L simulate --n 3000 --seed 1 --out "$OUT/data/train" --shard-size 1000 --preview
$L simulate --n 1000 --seed 2 --out "$OUT/data/test" --shard-size 1000
echo "look at: $OUT/data/train/gallery.png"
