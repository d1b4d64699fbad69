#!/usr/bin/env bash
# Issue #15's training recipe on a GPU machine: does compute close the cross-simulator gap that 20 CPU
# minutes leave? For each preset in PRESETS: simulate N cutouts with PROCS single-threaded `lenstrt simulate`
# processes (PROCS per preset, all presets at once: the simulator is one process, a GPU machine has the
# cores), then train one member per preset, all presets at once on the one GPU, for MINUTES. Each run's
# best.pt lands in OUT_DIR with its weights in fp16 (a resnet18 in 22 MB) split into parts of at most
# 15 MiB, so that two runs fit what a GPU machine here hands back (8 files, 16 MiB each); logs in
# recipe_logs.tgz. Loading casts the weights back to fp32. Score them where the cross-simulator set lives:
#   cat OUT/<preset>.best16.pt.part-* > run/<preset>/resnet18-s0/best.pt
#   lenstrt evaluate --checkpoint run/<preset> --data xsim10k --bar
# Defaults: two presets (lsst-gri-survey and benchmarks/surveys/lsst-gri-wide.yaml) x 120,000 cutouts,
# resnet18, batch 256, 4.5 minutes each: about 8 minutes on one H200 with 16 cores.
# SMOKE=1: tiny sizes on whatever device torch picks (checks the flow; ~30 s on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=$(mkdir -p "${OUT_DIR:?set OUT_DIR}" && cd "$OUT_DIR" && pwd)
WORK=${WORK:-$(mktemp -d /tmp/gpu_recipe.XXXXXX)}  # fresh: shards of an earlier run would be reused or mixed in
PRESETS=${PRESETS:-"lsst-gri-survey benchmarks/surveys/lsst-gri-wide.yaml"}
N=${N:-120000}; PROCS=${PROCS:-7}; MINUTES=${MINUTES:-4.5}; ARCH=${ARCH:-resnet18}; BATCH=${BATCH:-256}
VAL_EVERY=${VAL_EVERY:-1000}
if [ "${SMOKE:-0}" = 1 ]; then N=280; PROCS=2; MINUTES=0.15; BATCH=32; VAL_EVERY=5; fi
mkdir -p "$WORK"
# Logs reach OUT_DIR however the script ends; a stopped run takes its simulators and trainings with it.
trap '(cd "$WORK" && tar czf "$OUT/recipe_logs.tgz" ./*.log ./*.ensemble.json 2>/dev/null) || true' EXIT
trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
L=("$PY" -m lenstrt)
t0=$(date +%s)
sims=()
for p in $PRESETS; do
  name=$(basename "$p" .yaml)
  for i in $(seq 0 $((PROCS - 1))); do
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "${L[@]}" simulate --n $((N / PROCS)) --seed $((1000 + i)) --survey "$p" \
      --out "$WORK/$name/data/p$i" --shard-size 5000 --storage float16 -q > "$WORK/$name.sim$i.log" 2>&1 &
    sims+=($!)
  done
done
for pid in "${sims[@]}"; do
  wait "$pid" || { echo "a simulation failed: see $WORK/*.sim*.log (also in recipe_logs.tgz)"; exit 1; }
done
echo "simulated $(( N / PROCS * PROCS )) cutouts x $(echo $PRESETS | wc -w) preset(s) in $(( $(date +%s) - t0 )) s"
pids=()
for p in $PRESETS; do
  name=$(basename "$p" .yaml)
  "${L[@]}" train --data "$WORK/$name/data" --arch "$ARCH" --members 1 --time-budget "$MINUTES" --batch-size "$BATCH" \
    --val-every "$VAL_EVERY" --in-memory --out "$WORK/$name/run" -q > "$WORK/$name.train.log" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
for p in $PRESETS; do
  name=$(basename "$p" .yaml)
  tail -4 "$WORK/$name.train.log"
  best=$(ls "$WORK/$name"/run/*/best.pt 2>/dev/null | head -1) || true
  [ -n "$best" ] || { echo "$name: no best.pt"; rc=1; continue; }
  "$PY" - "$best" "$WORK/$name.best16.pt" <<'PY' || { echo "$name: packing failed"; rc=1; continue; }
import sys
import torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
torch.save(ck, sys.argv[2])
PY
  split -b 15M -d "$WORK/$name.best16.pt" "$OUT/$name.best16.pt.part-" || { echo "$name: split failed"; rc=1; continue; }
  cp "$WORK/$name/run/ensemble.json" "$WORK/$name.ensemble.json" 2>/dev/null || true
done
echo "done in $(( $(date +%s) - t0 )) s"
exit $rc
