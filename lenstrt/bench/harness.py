"""Runs every configuration in a subprocess and assembles the report rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import __version__
from lenstrt.bench.stats import top_k_overlap
from lenstrt.bundle import Bundle

SCHEMA = "lenstrt-bench/1"
REFERENCE = {"backend": "torch", "ensemble": "separate", "batch_size": 64}


@dataclass(frozen=True)
class BenchSpec:
    backends: tuple[str, ...] = ("torch", "ort")
    batch_sizes: tuple[int, ...] = (1, 64)
    ensemble: tuple[str, ...] = ("members", "separate", "concurrent", "fused")
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    n_agree: int = 256
    price_per_hour: float | None = None
    instance: str | None = None
    timeout_s: float = 600.0
    extra: dict = field(default_factory=dict)
    precisions: tuple[str, ...] = ("auto",)   # --precision: each backend runs each one it supports


def supports(backend: str, precision: str) -> bool:
    """Whether the bench backend (worker.BACKENDS name) can run `precision` on any device."""
    from lenstrt.bench.worker import BACKENDS
    from lenstrt.runtime.select import SUPPORTED

    if precision == "auto":
        return True
    base = BACKENDS[backend][0] if backend in BACKENDS else backend
    if backend in ("torch-amp",):
        return False  # torch-amp is torch at bf16/fp16: ask for `torch` with --precision instead
    return any(precision in p for p in SUPPORTED.get(base, {}).values())


def configs(spec: BenchSpec, bundle: Bundle) -> list[dict[str, Any]]:
    out = []
    names = [m.name for m in bundle.members]
    for backend in spec.backends:
        for prec in [p for p in spec.precisions if supports(backend, p)]:
            tag = {} if prec == "auto" else {"precision": prec}
            for bs in spec.batch_sizes:
                for mode in spec.ensemble:
                    if mode == "members":
                        out += [{"backend": backend, "batch_size": bs, "ensemble": "member", "member": n, **tag}
                                for n in names]
                        continue
                    if mode == "fused" and (backend.startswith("torch") or not bundle.fused):
                        continue
                    if mode == "concurrent" and len(names) < 2:
                        continue
                    out.append({"backend": backend, "batch_size": bs, "ensemble": mode, **tag})
    return out


def _inputs(bundle: Bundle, data: list[str] | None, n: int, tmp: Path) -> tuple[Path, np.ndarray | None]:
    """Cutouts to time on, which are also the labelled agreement set (simulated unless --data)."""
    from lenstrt.data.samples import sample_cutouts

    inp = bundle.input
    x, y, _ = sample_cutouts(data, n, inp.get("survey"), inp["shape"][1], inp["image_size"], seed=7)
    np.save(tmp / "cutouts.npy", x)
    return tmp / "cutouts.npy", y


def run_config(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    path = Path(cfg["out"]).with_suffix(".cfg.json")
    path.write_text(json.dumps(cfg))
    try:
        proc = subprocess.run([sys.executable, "-m", "lenstrt.bench.worker", str(path)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        if proc.returncode < 0:
            err = f"crashed ({signal.Signals(-proc.returncode).name})"
        else:
            err = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
        return {"ok": False, "error": err}
    return json.loads(Path(cfg["out"]).read_text())


def run_bench(bundle_dir: str | Path, spec: BenchSpec, data: list[str] | None = None, progress=print) -> dict[str, Any]:
    from lenstrt.envinfo import collect

    bundle = Bundle(bundle_dir)
    price = spec.price_per_hour
    price_note = None
    if spec.instance:
        from lenstrt.cloud.pricing import lookup

        p = lookup(spec.instance)
        price = p.on_demand_usd_h
        price_note = f"{p.instance} on-demand ${p.on_demand_usd_h}/h ({p.cloud} {p.region}, {p.price_date})"
    elif price is not None:
        price_note = f"${price}/h (given)"
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cutouts, labels = _inputs(bundle, data, spec.n_agree, tmp)
        todo = configs(spec, bundle)
        ref_cfg = dict(REFERENCE)
        all_cfgs = [ref_cfg] + [c for c in todo if c != ref_cfg and c != {**ref_cfg, "precision": "fp32"}]
        for i, c in enumerate(all_cfgs):
            cfg = {**c, "bundle": str(bundle.root), "warmup_ms": spec.warmup_ms, "duration_s": spec.duration_s,
                   "cutouts_npy": str(cutouts), "out": str(tmp / f"r{i}.json"),
                   "scores_out": str(tmp / f"s{i}.npy")}
            label = f"{c['backend']} {c['ensemble']}{':' + c['member'] if c.get('member') else ''} b{c['batch_size']}"
            res = run_config(cfg, spec.timeout_s)
            if res.get("precision") and (c.get("precision") or c["backend"] != "torch"):
                label += f" {res['precision']}"
            elif c.get("precision"):
                label += f" {c['precision']}"
            row = {**c, "label": label, **res}
            if res.get("ok"):
                row["scores"] = np.load(cfg["scores_out"])
                if price is not None:
                    from lenstrt.cloud.pricing import usd_per_million

                    row["usd_per_million"] = usd_per_million(res["images_per_s"], price)
            rows.append(row)
            progress(f"  {label:<42} " + (f"{res['images_per_s']:9.1f} img/s  p50 {res['latency']['p50_ms']:.2f} ms"
                                           if res.get("ok") else f"FAILED: {res['error']}"))
        ref = rows[0]
        for r in rows:
            if r.get("ok") and ref.get("ok") and not r.get("member"):
                r["agreement"] = _agreement(ref["scores"], r["scores"], labels)
            elif r.get("ok") and r.get("member"):
                r["agreement"] = None  # a member alone is not the ensemble the reference scores
        for r in rows:
            r.pop("scores", None)
    report = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "lenstrt_version": __version__, "env": collect(), "bundle": str(bundle.root),
              "bundle_manifest_sha256": bundle.manifest_sha256(), "members": [m.name for m in bundle.members],
              "spec": asdict(spec), "price": price_note, "reference": REFERENCE,
              "agreement_set": {"n": spec.n_agree, "labelled": labels is not None, "source": data or "simulated"},
              "rows": rows, "member_models": member_models(bundle)}
    report["ratios"] = ratios(rows)
    return report


def member_models(bundle: Bundle) -> list[dict[str, Any]]:
    """Per member: parameter count (the fp32 graph's float initializers) and each artifact's size in bytes."""
    import onnx

    out = []
    for m in bundle.members:
        arts = m.entry.get("artifacts", {})
        params = None
        if "onnx" in arts:
            g = onnx.load(str(bundle.path(arts["onnx"])), load_external_data=False).graph
            params = int(sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT))
        out.append({"member": m.name, "arch": m.arch, "parameters": params,
                    "bytes": {k: a.get("bytes") for k, a in arts.items()}})
    return out


def _agreement(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    from lenstrt.metrics import roc_auc

    out = {"max_abs_prob_diff": float(np.abs(ref - got).max()), "mean_abs_prob_diff": float(np.abs(ref - got).mean()),
           "top100_overlap": top_k_overlap(ref, got, 100)}
    if labels is not None and 0 < labels.sum() < len(labels):
        out["auc_diff"] = roc_auc(labels, got) - roc_auc(labels, ref)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Speed of each row relative to torch (eager fp32) with the same member/mode and batch size."""
    base = {(r.get("member"), r["ensemble"], r["batch_size"]): r["images_per_s"] for r in rows
            if r.get("ok") and r["backend"] == "torch" and r.get("precision", "fp32") == "fp32"}
    out = []
    for r in rows:
        key = (r.get("member"), r["ensemble"], r["batch_size"])
        if r.get("ok") and not (r["backend"] == "torch" and r.get("precision", "fp32") == "fp32") and key in base:
            out.append({"label": r["label"], "vs": "torch", "speedup": r["images_per_s"] / base[key]})
    # concurrency and fusion against one-after-another, same backend and batch size
    # (and the same precision)
    sep = {(r["backend"], r["batch_size"], r.get("precision")): r["images_per_s"] for r in rows
           if r.get("ok") and r["ensemble"] == "separate"}
    for r in rows:
        k = (r["backend"], r["batch_size"], r.get("precision"))
        if r.get("ok") and r["ensemble"] in ("concurrent", "fused") and k in sep:
            out.append({"label": r["label"], "vs": "separate", "speedup": r["images_per_s"] / sep[k]})
    return out
