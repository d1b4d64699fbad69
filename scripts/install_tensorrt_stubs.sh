#!/usr/bin/env bash
# TensorRT cannot be installed here, but its type stubs can: mypy then checks our two TensorRT modules
# against the real 10.13 API. The stubs go into their own folder (not site-packages): installed there,
# they would make `import tensorrt` succeed as an empty namespace package and fool backend detection.
# The shipped stubs need three repairs before mypy accepts them (see docs/tensorrt.md).
set -euo pipefail
PY=${1:-.venv/bin/python}
DEST=$(dirname "$(dirname "$PY")")/typestubs
if [ -f "$DEST/.repaired" ]; then exit 0; fi
rm -rf "$DEST"
"$PY" -m pip install -q --no-deps --target "$DEST" tensorrt-stubs==10.13.0.35.1
sed -i -e 's/, in: /, in_: /g' -e 's/channel_axis: int) ->/channel_axis: int = ...) ->/' \
    "$DEST/tensorrt_bindings/tensorrt.pyi"
touch "$DEST/tensorrt/py.typed" "$DEST/tensorrt_bindings/py.typed" "$DEST/.repaired"
