"""The agreement table printed after an export (and by `make demo`)."""

from __future__ import annotations

from typing import Any


def agreement_table(manifest: dict[str, Any]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    from lenstrt.bundle import find, precisions

    t = Table(title=f"export agreement vs PyTorch fp32 ({manifest['validation_data']})")
    for col in ("member", "graph", "max |Δlogit|", "max |Δprob|", "mean |Δprob|", "AUC ref", "AUC", "AUC drop",
                "top-100", "file"):
        t.add_column(col, justify="right" if col not in ("member", "graph", "file") else "left")

    def row(name, kind, a, art):
        fmt = lambda k, f: (f.format(a[k]) if k in a else "-")  # noqa: E731
        t.add_row(name, kind, fmt("max_abs_logit_diff", "{:.1e}"), fmt("max_abs_prob_diff", "{:.1e}"),
                  fmt("mean_abs_prob_diff", "{:.1e}"), fmt("auc_reference", "{:.4f}"), fmt("auc", "{:.4f}"),
                  fmt("auc_drop", "{:+.4f}"), fmt("top100_overlap", "{:.2f}"),
                  f"{art['path']} ({art['bytes'] / 1e6:.1f} MB)" if art else "-")

    # agreement key -> (label, artifact format, precision): every validated artifact gets its row
    kinds = {"fp32": ("fp32", "onnx", "fp32"), "fp16": ("fp16", "onnx", "fp16"), "int8": ("int8", "onnx", "int8"),
             "int8_openvino": ("int8 OpenVINO", "onnx", "int8"),
             "engine": ("TensorRT", "plan", None), "engine_int8": ("TensorRT int8", "plan", "int8")}
    runtime_of = {"int8": "onnxruntime", "int8_openvino": "openvino"}  # the INT8 graph is gated per CPU runtime

    def label_of(key: str, label: str, art) -> str:
        rt = runtime_of.get(key)
        return f"{label} (refused)" if rt and art and "runtimes" in art and rt not in art["runtimes"] else label

    def art_of(arts: dict, fmt: str, prec: str | None):
        if prec is None:  # the non-INT8 engine, fp16 or fp32
            prec = next((p for p in precisions(arts, fmt) if p != "int8"), "fp16")
        return find(arts, fmt, prec)

    for m in manifest["members"]:
        for key, (label, fmt, prec) in kinds.items():
            if key in m["agreement"]:
                art = art_of(m["artifacts"], fmt, prec)
                row(m["name"], label_of(key, label, art), m["agreement"][key], art)
    f = manifest.get("fused")
    if f:
        for key, a in f["agreement"].items():
            label, fmt, prec = kinds.get(key, (key, "", "fp32"))
            row("fused", label, a, art_of(f["artifacts"], fmt, prec))
        art8 = find(f["artifacts"], "onnx", "int8")  # the fused INT8 graph keeps its figures in its entry
        if art8 and "agreement" in art8 and "int8" not in f["agreement"]:
            row("fused", label_of("int8", "int8", art8), art8["agreement"], art8)
            if "agreement_openvino" in art8:
                row("fused", label_of("int8_openvino", "int8 OpenVINO", art8), art8["agreement_openvino"], art8)
    buf = StringIO()
    Console(file=buf, width=150).print(t)
    return buf.getvalue().rstrip()
