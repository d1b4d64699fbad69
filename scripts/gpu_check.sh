#!/usr/bin/env bash
# The one-command GPU check (issue #11; `make gpu-check`): pytest -m "gpu or trt", fp32 vs AMP training
# throughput, serve streams vs sequential, and the GPU rows of `lenstrt bench`, in under 8 minutes, into
# benchmarks/results/<date>-gpu-<gpu>.md (+ .json). Needs no network and nothing installed beyond torch
# (+ torchvision, numpy); what is missing is skipped with the reason. See docs/gpu_check.md.
#   bash scripts/gpu_check.sh [--cpu-dry-run] [--out-dir DIR] [--budget-s S] [--keep-work] ...
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "no Python interpreter '$PYTHON' here: nothing to check"
    exit 0
fi
dry=0
for arg in "$@"; do [ "$arg" = "--cpu-dry-run" ] && dry=1; done
if [ "$dry" = 0 ]; then
    # torch.cuda.is_available() with a broken driver can hang: bounded
    TO=""
    command -v timeout >/dev/null 2>&1 && TO="timeout 120"
    cuda=$($TO "$PYTHON" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)
    rc=$?
    if [ "$cuda" != "True" ] && [ "$cuda" != "False" ]; then
        if ! $TO "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
            echo "torch is not importable with $PYTHON: nothing to check"
        else
            echo "could not ask torch whether a CUDA GPU is here (exit code $rc): nothing to check"
        fi
        exit 0
    fi
    if [ "$cuda" = "False" ]; then
        echo "no CUDA GPU here (torch.cuda.is_available() is False): nothing to check"
        exit 0
    fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
