"""fp32 ONNX -> INT8 QDQ ONNX (explicit quantization), with onnxruntime's static quantization.

One graph serves three runtimes: ONNX Runtime runs the QDQ pairs as integer kernels, OpenVINO's CPU
plugin folds them into its own INT8 kernels, and TensorRT builds it as an explicitly quantized, strongly
typed network (no implicit calibrator: the scales are in the graph). Recipe:
- weights per channel, signed and symmetric (what TensorRT and OpenVINO require); activations unsigned
  8-bit with a zero point for the CPU runtimes, ranges from percentile calibration by default (measured
  best, docs/export.md) on cutouts of the bundle's survey;
- for TensorRT a second graph, activations signed 8-bit and symmetric, biases float: its ONNX parser
  takes only zero points of 0 and dequantizes INT8 (not UINT8, not the CPU graph's INT32 biases). Not one graph for
  all: on an AVX2 CPU without VNNI the symmetric graph moved ONNX Runtime's probabilities 2.5x and
  OpenVINO's 20x more than the asymmetric one (docs/export.md);
- kept in float: the in-graph preprocessing (median / MAD / asinh of raw fluxes: quantized, it saturates
  on fluxes outside the calibration range and the classifier collapses to AUC 0.50, measured), and the
  ops that INT8 hurts in transformers (LayerNorm, Softmax, GELU's Erf, reductions), plus the
  architecture's `ExportSpec.int8_float_ops`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.errors import ExportError

# Op types left in float (no Q/DQ around them) in every INT8 graph.
FLOAT_OPS = ("LayerNormalization", "Softmax", "Erf", "Pow", "Sqrt", "ReduceMean", "ReduceSum", "Sigmoid", "TopK",
             "Asinh")
METHODS = ("minmax", "entropy", "percentile")


def float_nodes(model, extra_ops: tuple[str, ...] = ()) -> list[str]:
    """Names of the nodes an INT8 graph keeps in float: the preprocessing and FLOAT_OPS (+ `extra_ops`)."""
    from lenstrt.export.fp16 import preprocessing_nodes

    ops = set(FLOAT_OPS) | set(extra_ops)
    keep = set(preprocessing_nodes(model))
    keep |= {n.name for n in model.graph.node if n.op_type in ops}
    # A float op stays float only if its neighbours do not quantize the tensors between them: the
    # quantizer puts Q/DQ on every input of a quantized MatMul (attention x V would quantize Softmax's
    # output) and on the output of a quantized Add (the residual stream into LayerNorm, where ViTs keep
    # their outlier channels) or of whatever computes the attention scores into Softmax.
    produced_by = {o: n for n in model.graph.node for o in n.output}
    float_out = {o for n in model.graph.node if n.op_type in ("Softmax",) for o in n.output}
    for n in model.graph.node:
        if n.op_type == "MatMul" and any(i in float_out for i in n.input):
            keep.add(n.name)
        src = produced_by.get(n.input[0]) if n.input else None
        if src is not None and ((n.op_type == "LayerNormalization" and src.op_type == "Add")
                                or n.op_type == "Softmax"):
            keep.add(src.name)
    return sorted(k for k in keep if k)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: one {input: batch} dict per call, None at the end."""

    def __init__(self, name: str, images: np.ndarray, batch: int = 32):
        self.name, self.images, self.batch, self.i = name, images, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.images):
            return None
        x = np.ascontiguousarray(self.images[self.i:self.i + self.batch], dtype=np.float32)
        self.i += self.batch
        return {self.name: x}

    def rewind(self) -> None:
        self.i = 0


def int8_from_onnx(src: str | Path, dst: str | Path, calib: np.ndarray, method: str = "percentile",
                   extra_float_ops: tuple[str, ...] = (), symmetric: bool = False,
                   unsigned_weights: bool = False) -> dict[str, Any]:
    """Writes the QDQ graph to `dst`; returns what the manifest records about it. `symmetric`: int8
    activations with zero points of 0, the graph TensorRT builds. `unsigned_weights`: uint8 weights (U8U8),
    measured for CPUs without VNNI and not exported: exact there, but no faster than fp32 (docs/export.md)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ExportError(f"--calib-method {method!r}: choose one of {', '.join(METHODS)}")
    if len(calib) < 1:
        raise ExportError("INT8 calibration needs at least one cutout (--calib-n)")
    model = onnx.load(str(src))
    keep = float_nodes(model, extra_float_ops)
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice: shapes are static here but the batch
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print their progress
            quantize_static(str(src), str(dst), _Reader(model.graph.input[0].name, calib),
                            quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            calibrate_method=cm, nodes_to_exclude=keep,
                            # TensorRT dequantizes INT8/FP8/INT4 only: biases stay float there (it fuses them)
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric,
                                           "QuantizeBias": not symmetric,
                                           "CalibMovingAverage": method == "minmax"})
    except Exception as exc:
        raise ExportError(f"{Path(src).name}: INT8 quantization failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    finally:
        root.setLevel(level)
    from lenstrt.export.onnx import check_onnx

    check_onnx(dst)
    q = onnx.load(str(dst))
    if symmetric and (bad := tensorrt_qdq_problems(q)):
        raise ExportError(f"{Path(dst).name}: TensorRT cannot parse this INT8 graph: {bad[0]} "
                          f"(and {len(bad) - 1} more)")
    n_q = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear")
    return {"calibration": {"method": method, "n": int(len(calib)), "per_channel": True,
                            "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
                            "weights": ("uint8" if unsigned_weights else "int8") + " symmetric per channel"},
            "nodes": {"float_kept": len(keep), "quantize_linear": n_q}}


def tensorrt_qdq_problems(model) -> list[str]:
    """What TensorRT's ONNX parser refuses in a QDQ graph: a Q/DQ zero point that is not int8 zeros
    (its operator table: `y_zero_point` must be 0; UINT8 only as a network input or output)."""
    from onnx import TensorProto, numpy_helper

    consts = {i.name: i for i in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    out = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or not n.input[2]:
            if n.op_type == "QuantizeLinear" and not any(a.name == "output_dtype" for a in n.attribute):
                out.append(f"QuantizeLinear {n.name}: no zero point, so its output is UINT8")
            continue  # a DequantizeLinear without one reads its input's type, checked where that is quantized
        z = consts.get(n.input[2])
        if z is None:
            out.append(f"{n.op_type} {n.name}: zero point {n.input[2]} is computed, not a constant")
        elif z.data_type != TensorProto.INT8:
            out.append(f"{n.op_type} {n.name}: zero point of type {TensorProto.DataType.Name(z.data_type)}, not INT8")
        elif np.any(numpy_helper.to_array(z) != 0):
            out.append(f"{n.op_type} {n.name}: nonzero zero point (TensorRT quantizes symmetrically)")
    return out


def int8_gate_failure(agree: dict[str, Any], atol_prob: float, mean_prob: float, max_auc_drop: float,
                      min_top100: float, min_rows_top100: int = 200) -> str | None:
    """Why an INT8 artifact fails against its fp32 reference, or None.

    INT8 moves single probabilities far more than fp16 (max |Δp| ~0.15 on a good graph, measured) while
    keeping the ranking, so the gates are on what a lens search keeps: the AUC (working classifiers,
    as for fp16), the top-100 candidates (where the set has at least `min_rows_top100` rows: with fewer,
    the top 100 is most of the set and says nothing), the mean |Δp|, and a loose max |Δp| against
    gross breakage."""
    from lenstrt.export.pipeline import auc_drop_fails

    problems = []
    if agree["max_abs_prob_diff"] > atol_prob:
        problems.append(f"max |prob diff| {agree['max_abs_prob_diff']:.2e} (tol {atol_prob})")
    if agree["mean_abs_prob_diff"] > mean_prob:
        problems.append(f"mean |prob diff| {agree['mean_abs_prob_diff']:.2e} (tol {mean_prob})")
    if auc_drop_fails(agree, max_auc_drop):
        problems.append(f"AUC drop {agree['auc_drop']:.4f} (tol {max_auc_drop})")
    working = agree.get("auc_drop_enforced", "auc_drop" not in agree)
    top = agree.get("top100_overlap")
    enforce_top = top is not None and agree["n"] >= min_rows_top100 and working
    agree["top100_enforced"] = bool(enforce_top)
    if enforce_top and top < min_top100:
        problems.append(f"top-100 overlap {top:.2f} (min {min_top100})")
    if not problems:
        return None
    figures = (f"; max |prob diff| {agree['max_abs_prob_diff']:.2e}, mean {agree['mean_abs_prob_diff']:.2e}, "
               f"AUC drop {agree.get('auc_drop', 0):.4f}, top-100 overlap {top if top is not None else '-'}")
    return ", ".join(problems) + figures


def calibration_set(ckpt: dict[str, Any], data: list[str] | None, n: int) -> tuple[np.ndarray, str]:
    """Cutouts to calibrate on: `--calib-data`, or simulated for the checkpoint's survey (a seed of its own,
    so calibration and validation never share cutouts)."""
    from lenstrt.data.samples import sample_cutouts

    x, _, desc = sample_cutouts(data, n, ckpt.get("survey"), len(ckpt["bands"]), ckpt["image_size"], seed=20260707)
    return x, desc
