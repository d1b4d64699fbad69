"""bench.json, bench.md (a table to paste into an issue), bench.png and the terminal table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lenstrt.io import write_json


def _fmt(v, f):
    return "-" if v is None else f.format(v)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        if not r.get("ok"):
            out.append([r["label"], "FAILED", "-", "-", "-", "-", "-", "-", "-", "-", r.get("error", "")[:60]])
            continue
        a = r.get("agreement") or {}
        lat = r["latency"]
        split = r.get("gpu_time_split")
        where = ",".join(p.replace("ExecutionProvider", "") for p in r.get("providers", []))
        if split:
            where += " H2D/compute/D2H {h2d_share:.0%}/{compute_share:.0%}/{d2h_share:.0%}".format(**split)
        out.append([r["label"], _fmt(r["images_per_s"], "{:,.1f}"), _spread(r.get("spread")),
                    _fmt(r.get("vs_torch_fp32"), "{:.2f}x"), _fmt(lat.get("p50_ms"), "{:.2f}"),
                    _fmt(lat.get("p99_ms"), "{:.2f}"), _fmt(r.get("peak_rss_mib"), "{:,.0f}"),
                    _fmt(a.get("max_abs_prob_diff"), "{:.1e}"), _fmt(a.get("top100_overlap"), "{:.2f}"),
                    _fmt(r.get("usd_per_million"), "${:.3f}"), where.strip()])
    return out


def _spread(sp: dict | None) -> str:
    """min-max over the windows, their count, and `!` where the last three never agreed."""
    if not sp:
        return "-"
    return f"{sp['min']:,.1f}-{sp['max']:,.1f} ({sp['windows']}{'' if sp['stable'] else '!'})"


HEADER = ["configuration", "img/s", "min-max (windows)", "vs torch fp32", "p50 ms", "p99 ms", "RSS MiB", "max |Δp|", "top-100", "$/1M", "providers / GPU time"]


def markdown(report: dict[str, Any]) -> str:
    env = report["env"]
    spec = report.get("spec", {})
    lines = [f"# lenstrt bench ({report['created']})", "",
             f"- machine: {env['cpu']} x{env['cpu_cores']}, GPUs: {env['gpus']}",
             f"- torch {env['torch']}, onnxruntime {env['onnxruntime']}, TensorRT: {env['tensorrt']}",
             f"- bundle: `{report['bundle']}` (members: {', '.join(report['members'])})",
             f"- agreement vs torch fp32 separate b64 on {report['agreement_set']['n']} cutouts; price: {report['price']}",
             f"- img/s: median of the last {spec.get('stable_windows', 3)} timing windows once they agree within "
             f"{spec.get('stable_pct', 5)}% (configurations compared with each other timed in interleaved rounds); "
             f"min-max over every window, `!` = never stable in {spec.get('max_windows', 12)} windows",
             "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
    if report.get("member_models"):
        lines += ["", "| member | arch | parameters | artifacts (MB) |", "|---|---|---|---|"]
        lines += [f"| {m['member']} | {m['arch']} | {_fmt(m['parameters'], '{:,}')} | "
                  + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in m["bytes"].items() if v) + " |"
                  for m in report["member_models"]]
    if report["ratios"]:
        lines += ["", "| speed-up | vs | x |", "|---|---|---|"]
        lines += [f"| {q['label']} | {q['vs']} | {q['speedup']:.2f} |" for q in report["ratios"]]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    from lenstrt.plots import bars

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    (out / "bench.md").write_text(markdown(report))
    groups: dict[str, dict[str, float]] = {}
    for r in report["rows"]:
        if r.get("ok"):
            series = f"{r['backend']} {r['ensemble']}" + (f":{r['member']}" if r.get("member") else "")
            groups.setdefault(f"batch {r['batch_size']}", {})[series] = r["images_per_s"]
    bars(groups, "images / s", out / "bench.png", title="lenstrt bench: throughput")
    return {"json": out / "bench.json", "md": out / "bench.md", "png": out / "bench.png"}


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="lenstrt bench")
    for h in HEADER:
        t.add_column(h, justify="left" if h in ("configuration", HEADER[-1]) else "right")
    for r in table_rows(report):
        t.add_row(*r)
    c = Console(width=160)
    c.print(t)
    for q in report["ratios"]:
        c.print(f"  {q['label']}: {q['speedup']:.2f}x vs {q['vs']}")
