"""PyTorch -> ONNX with the torch.export-based exporter: one self-contained file, dynamic batch."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from lenstrt.errors import ExportError


def onnx_from_module(module, example, path: str | Path, input_name: str, output_names: list[str], opset: int,
                     max_batch: int = 4096) -> Path:
    import onnx
    import torch

    path = Path(path)
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                              input_names=[input_name], output_names=output_names, opset_version=opset,
                              dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ExportError(f"{path.name}: torch.onnx.export failed ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    check_onnx(path)
    model = onnx.load(str(path))
    if model.opset_import[0].version < 18:
        raise ExportError(f"{path}: exported with opset {model.opset_import[0].version}, need >= 18")
    return path


def check_onnx(path: str | Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: fails onnx.checker ({str(exc).splitlines()[0]})") from exc
