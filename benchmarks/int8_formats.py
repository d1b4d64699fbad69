"""Which INT8 QDQ format holds where: a checkpoint's fp32 graph quantized three ways (uint8 activations with
zero points, the CPU graph; int8 symmetric, the TensorRT graph; uint8 activations and weights, U8U8, the
format ONNX Runtime suggests where its U8S8 kernels saturate), each run three ways against the PyTorch
fp32 reference (ONNX Runtime's fused integer kernels, ONNX Runtime with the Q/DQ pairs emulated in float,
i.e. exact integer products as TensorRT and VNNI CPUs compute them, and OpenVINO). Also counts what
TensorRT's ONNX parser would refuse in each graph (docs/export.md, "One INT8 graph for the CPUs"). Then
each graph's speed on both CPU runtimes against the fp32 graph's (batch 64, all cores, one run: read the
ratios).

    python benchmarks/int8_formats.py --checkpoint RUN [--n-val 256] [--calib-n 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a .pt file or a run directory (its first member)")
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--calib-n", type=int, default=256)
    args = ap.parse_args()

    import onnx
    import torch

    from lenstrt import checkpoint as ck
    from lenstrt.envinfo import host
    from lenstrt.export.int8 import calibration_set, int8_from_onnx, tensorrt_qdq_problems
    from lenstrt.export.onnx import onnx_from_module
    from lenstrt.export.pipeline import _int8_agreement, validation_set
    from lenstrt.export.validate import run_onnx_guarded
    from lenstrt.models import export_spec
    from lenstrt.train.trainer import predict_logits

    c = ck.load(ck.resolve(args.checkpoint)[0])
    model, spec, T = ck.build_model(c), export_spec(c["arch"]), float(c["temperature"])
    images, labels, desc = validation_set(c, None, args.n_val)
    calib, _ = calibration_set(c, None, args.calib_n)
    ref = predict_logits(model, images, "cpu")

    def openvino(path: Path) -> np.ndarray:
        m = ov_model(path)
        return np.concatenate([m(images[i:i + 128])[0][:, 0] for i in range(0, len(images), 128)])

    runs = {"ONNX Runtime": lambda p: run_onnx_guarded(p, images, "all")[0][:, 0],
            "ONNX Runtime, Q/DQ emulated": lambda p: run_onnx_guarded(p, images, "disable")[0][:, 0],
            "OpenVINO": openvino}
    h = host("cpu")
    print(f"{c['arch']}, {desc}; host {h['cpu']}, {h.get('cpu_capability')}, VNNI/AMX {h['cpu_int8_dot']}")
    print("| graph | TensorRT parser refuses | " + " | ".join(runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx_from_module(model, torch.from_numpy(images[:2]), src, spec.input_name, [spec.output_name], spec.opset, 256)
        graphs = {"fp32": src}
        for label, sym, u8 in (("uint8 activations with zero points (CPU)", False, False),
                               ("int8 symmetric (TensorRT)", True, False),
                               ("uint8 activations and weights (U8U8)", False, True)):
            dst = Path(tmp) / f"int8-{sym}-{u8}.onnx"
            try:
                int8_from_onnx(src, dst, calib, "percentile", spec.int8_float_ops, symmetric=sym, unsigned_weights=u8)
            except Exception as exc:
                print(f"| {label} | quantization failed: {exc} |")
                continue
            cells = [str(len(tensorrt_qdq_problems(onnx.load(str(dst)))))]
            for run in runs.values():
                a = _int8_agreement(ref, np.asarray(run(dst), np.float64), T, labels)
                cells.append(f"mean \\|Δp\\| {a['mean_abs_prob_diff']:.4f}, max {a['max_abs_prob_diff']:.3f}, "
                             f"AUC drop {a.get('auc_drop', 0):+.4f}, top-100 {a['top100_overlap']:.2f}")
            print(f"| {label} | " + " | ".join(cells) + " |")
            graphs[label] = dst
        print("\n| graph | ONNX Runtime img/s | OpenVINO img/s |\n|---|---|---|")
        speeds = {label: (throughput(ort_session(p), images), throughput(ov_model(p), images))
                  for label, p in graphs.items()}
        for label, (o, v) in speeds.items():
            print(f"| {label} | {o:.0f} ({o / speeds['fp32'][0]:.2f}x fp32) | {v:.0f} ({v / speeds['fp32'][1]:.2f}x fp32) |")


def ort_session(path: Path):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})


def ov_model(path: Path):
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU")


def throughput(run, images: np.ndarray, batch: int = 64, seconds: float = 5.0) -> float:
    x = np.ascontiguousarray(images[:batch])
    run(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
