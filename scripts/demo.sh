#!/usr/bin/env bash
# `make demo`: the whole pipeline on built-in simulated data, on the CPU, in about five minutes.
set -euo pipefail
OUT=${1:-demo_out}
L=.venv/bin/lenstrt
rm -rf "$OUT"
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s)

step "1/7 environment"
$L info

step "2/7 simulate: a training set and a separate test set (LSST-like g,r,i 64x64; half lenses, hard negatives), and a look at the survey's whole population (every kind of negative, per-cutout seeing, stars, artefacts)"
$L simulate --n 4000 --seed 1 --out "$OUT/data/train" --shard-size 2000 --preview
$L simulate --n 1000 --seed 2 --out "$OUT/data/test"
$L simulate --n 600 --seed 4 --survey lsst-gri-survey --out "$OUT/data/survey_population" --preview

# A fixed number of steps, not a time budget: on a busy machine a time budget trained a third of the
# steps, and the half-trained ViT (temperature 0.05) failed the INT8 export gate. Steps give the same
# models on any machine; ~1.5 and ~0.75 minutes on an idle 2-core CPU.
step "3/7 train: a resnet18 + small-ViT ensemble, briefly (100 and 150 steps; bf16 autocast where the CPU has it)"
$L train --data "$OUT/data/train" --arch resnet18 --max-steps 100 --out "$OUT/run"
$L train --data "$OUT/data/train" --arch vit_small --max-steps 150 --out "$OUT/run_vit"

step "4/7 evaluate on the held-out test set (completeness by theta_E x arc S/N, each negative kind: report.md)"
$L evaluate --checkpoint "$OUT/run" --data "$OUT/data/test" --out "$OUT/eval" -q

step "4b/7 cross-simulator check: a set made by lenstronomy, not by us (docs/cross_sim.md), against the quality bar"
.venv/bin/python benchmarks/cross_sim.py --n 600 --seed 2026 --shard-size 300 --workers 2 --no-progress --out "$OUT/data/xsim"
$L evaluate --checkpoint "$OUT/run" --data "$OUT/data/xsim" --out "$OUT/eval_xsim" --bar -q

step "4c/7 fine-tune: the resnet18 warm-started (--init) on 540 cutouts of the survey's whole population, 30 steps: shows the flag and the before/after report, not a better model (docs/training.md)"
$L train --data "$OUT/data/survey_population" --arch resnet18 --max-steps 30 --init "$OUT/run" --out "$OUT/run_ft" -q
$L evaluate --checkpoint "$OUT/run_ft" --data "$OUT/data/xsim" --out "$OUT/eval_xsim_ft" --compare "$OUT/eval_xsim/metrics.json" -q

step "5/7 export: validated ONNX + fp16 + INT8 graphs + fused ensemble graph (+ TensorRT engines where TensorRT and a GPU exist)"
# The INT8 graph is gated on ONNX Runtime and OpenVINO separately and kept for whichever passes: on an AVX2
# CPU without VNNI, ONNX Runtime moved the demo's 100-step model by a mean 0.037 (tolerance 0.02) and OpenVINO
# by 0.010, so there the graph is kept for OpenVINO, serve picks it, and the bench's ONNX Runtime INT8 rows say
# why they cannot run. Where every runtime refuses, the export says whether the quantization or the CPU's
# kernels lost the agreement, and the demo goes on without INT8 (docs/export.md).
PREC=fp32,int8
if ! $L export --checkpoint "$OUT/run" --checkpoint "$OUT/run_vit" --fp16 --int8 --fuse --out "$OUT/bundle" \
    --triton "$OUT/triton"; then
  echo "note: the INT8 gate refused this toy model's graph on this CPU (above); exporting without --int8"
  PREC=fp32
  $L export --checkpoint "$OUT/run" --checkpoint "$OUT/run_vit" --fp16 --fuse --out "$OUT/bundle" --triton "$OUT/triton"
fi

step "6/7 serve: score a fresh simulated catalog with the ensemble (resumable, exactly once; auto picks the fastest validated path)"
$L simulate --n 3000 --seed 3 --out "$OUT/data/catalog" --shard-size 1000 -q
$L serve --bundle "$OUT/bundle" --input "$OUT/data/catalog" --out "$OUT/serve" --gallery
echo "top candidates:"
head -n 6 "$OUT/serve/candidates.csv" | cut -d, -f1-5 | column -t -s,

step "6b/7 cutout: stamps at catalog positions from simulated survey tiles, scored with ids and sky positions
(--tta-above 0.5: cutouts scoring >= 0.5 are scored again in their 8 flips/rotations, averaged)"
.venv/bin/python -m lenstrt.data.mock_tiles --data "$OUT/data/catalog" --out "$OUT/survey" --n 400
$L cutout --tiles "$OUT/survey/tiles/*_{band}.fits" --catalog "$OUT/survey/objects.parquet" --size 64 \
    --bands g,r,i --out "$OUT/survey/stamps" -q
$L serve --bundle "$OUT/bundle" --input "$OUT/survey/stamps" --out "$OUT/survey/serve" --keep-columns ra,dec,theta_e \
    --tta-above 0.5 -q
.venv/bin/python -c "from astropy.table import Table; Table.read('$OUT/survey/serve/candidates.csv')['id','ra','dec','score','tta_views','flags'][:5].pprint()"
$L verify "$OUT/bundle" | tail -n 1

step "7/7 bench: PyTorch vs ONNX Runtime vs OpenVINO, fp32 and INT8, speed and agreement (short run)"
$L bench --bundle "$OUT/bundle" --backends torch,ort,openvino --precision "$PREC" --batch-sizes 64 \
    --ensemble members,separate,fused --duration-s 1 \
    --instance g4dn.xlarge --output-dir "$OUT/bench"

step "7b/7 inspect: a page to grade the top candidates by eye (open it from disk; keys 1-4 grade, arrows move)"
$L inspect "$OUT/serve" --top 500 --out "$OUT/inspect" -q
PAGE=$(cd "$OUT/inspect" && pwd)/index.html
echo "open in a browser: file://$PAGE"

cat <<MSG

demo finished in $(( $(date +%s) - t0 )) s. Look at:
  $OUT/data/train/gallery.png        simulated lenses, galaxies and hard negatives
  $OUT/data/survey_population/gallery.png   the survey's whole population: every kind of negative, artefacts
  $OUT/eval/report.md, *.png          ROC, reliability, completeness by theta_E x arc S/N, negatives by kind
  $OUT/eval_xsim/report.md            the same on the cross-simulator (lenstronomy) set, with the quality bar
  $OUT/eval_xsim_ft/report.md         the fine-tuned model (--init) against it, before/after tables
  $OUT/bundle/manifest.json           the exported bundle and its agreement figures
  $OUT/serve/candidates.csv, .png     the top lens candidates; summary.json for the run
  $OUT/bench/bench.md, bench.png      backend comparison
  $OUT/inspect/index.html             grade the candidates (docs/inspect.md): file://$PAGE
MSG
