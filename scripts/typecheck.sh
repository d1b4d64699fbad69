#!/usr/bin/env bash
# mypy over the two modules that import tensorrt, against the TensorRT 10.13 stubs.
set -euo pipefail
PY=${1:-.venv/bin/python}
STUBS=$(dirname "$(dirname "$PY")")/typestubs
bash "$(dirname "$0")/install_tensorrt_stubs.sh" "$PY"
MODULES=(lenstrt/export/tensorrt.py lenstrt/runtime/trt.py)
present=()
for m in "${MODULES[@]}"; do [ -f "$m" ] && present+=("$m"); done
[ ${#present[@]} -eq 0 ] && { echo "typecheck: no TensorRT modules yet"; exit 0; }
MYPYPATH="$STUBS" "$PY" -m mypy --follow-imports=silent --ignore-missing-imports "${present[@]}"
