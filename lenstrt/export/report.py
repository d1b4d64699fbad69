"""The agreement table printed after an export (and by `make demo`)."""

from __future__ import annotations

from typing import Any


def agreement_table(manifest: dict[str, Any]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"export agreement vs PyTorch fp32 ({manifest['validation_data']})")
    for col in ("member", "graph", "max |Δlogit|", "max |Δprob|", "mean |Δprob|", "AUC ref", "AUC", "AUC drop", "file"):
        t.add_column(col, justify="right" if col not in ("member", "graph", "file") else "left")

    def row(name, kind, a, art):
        fmt = lambda k, f: (f.format(a[k]) if k in a else "-")  # noqa: E731
        t.add_row(name, kind, fmt("max_abs_logit_diff", "{:.1e}"), fmt("max_abs_prob_diff", "{:.1e}"),
                  fmt("mean_abs_prob_diff", "{:.1e}"), fmt("auc_reference", "{:.4f}"), fmt("auc", "{:.4f}"),
                  fmt("auc_drop", "{:+.4f}"), f"{art['path']} ({art['bytes'] / 1e6:.1f} MB)" if art else "-")

    for m in manifest["members"]:
        row(m["name"], "fp32", m["agreement"]["fp32"], m["artifacts"]["onnx"])
        if "fp16" in m["agreement"]:
            row(m["name"], "fp16", m["agreement"]["fp16"], m["artifacts"]["onnx_fp16"])
        if "plan" in m["artifacts"]:
            row(m["name"], "TensorRT", {}, m["artifacts"]["plan"])
    f = manifest.get("fused")
    if f:
        for kind, a in f["agreement"].items():
            row("fused", kind, a, f["artifacts"]["onnx" if kind == "fp32" else "onnx_fp16"])
    buf = StringIO()
    Console(file=buf, width=150).print(t)
    return buf.getvalue().rstrip()
