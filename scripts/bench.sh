#!/usr/bin/env bash
# `make bench`: the speed benchmarks (not tests) on a freshly trained demo bundle, or BUNDLE=... if given.
set -euo pipefail
L=.venv/bin/lenstrt
B=${BUNDLE:-demo_out/bundle}
.venv/bin/python benchmarks/simulate_speed.py
if [ ! -f "$B/manifest.json" ]; then echo "no bundle at $B: run 'make demo' first or set BUNDLE=..."; exit 1; fi
$L bench --bundle "$B" --output-dir bench_out --instance g4dn.xlarge
D=$(mktemp -d)
$L simulate --n 5000 --seed 5 --out "$D" -q
.venv/bin/python benchmarks/serve_efficiency.py --bundle "$B" --data "$D"
rm -rf "$D"
