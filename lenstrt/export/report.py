"""The agreement table printed after an export (and by `make demo`)."""

from __future__ import annotations

from typing import Any


def agreement_table(manifest: dict[str, Any]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

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

    # agreement key -> (label, artifact key): every validated artifact gets its row
    kinds = {"fp32": ("fp32", "onnx"), "fp16": ("fp16", "onnx_fp16"), "int8": ("int8", "onnx_int8"),
             "engine": ("TensorRT", "plan"), "engine_int8": ("TensorRT int8", "plan_int8")}
    for m in manifest["members"]:
        for key, (label, art) in kinds.items():
            if key in m["agreement"]:
                row(m["name"], label, m["agreement"][key], m["artifacts"].get(art))
    f = manifest.get("fused")
    if f:
        for key, a in f["agreement"].items():
            label, art = kinds.get(key, (key, ""))
            row("fused", label, a, f["artifacts"].get(art))
        for key in ("onnx_int8",):  # the fused INT8 graph keeps its figures in its artifact entry
            art8 = f["artifacts"].get(key)
            if art8 and "agreement" in art8 and "int8" not in f["agreement"]:
                row("fused", "int8", art8["agreement"], art8)
    buf = StringIO()
    Console(file=buf, width=150).print(t)
    return buf.getvalue().rstrip()
