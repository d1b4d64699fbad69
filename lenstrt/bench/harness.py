"""Runs every configuration in a subprocess and assembles the report rows.

Stability (docs/bench.md): configurations that are compared with each other (same member or ensemble
mode and batch size: the torch fp32 row and every backend and precision beside it) are loaded together,
each in its own worker process, and timed in round-robin rounds, one window each per round, so load
from elsewhere on the machine falls on all of them alike. A configuration stops when its last three
windows agree within `stable_pct` (or after `max_windows`); its figure is the median of those three,
and the row keeps every window's throughput (min / quartiles / max) to show the spread.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import __version__
from lenstrt.bench.stats import is_stable, latency_stats, spread, top_k_overlap
from lenstrt.bundle import Bundle

SCHEMA = "lenstrt-bench/2"   # 2: images_per_s is the median of stable windows; rows carry `spread`
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
    stable_windows: int = 3       # windows that must agree
    stable_pct: float = 5.0       # ... within this (max - min) / median
    max_windows: int = 12         # then report the spread as it is
    min_calls: int = 3            # calls per window, at least

    @property
    def window_s(self) -> float:
        """One window: a third of --duration-s, so a quiet machine is done in about --duration-s."""
        return self.duration_s / self.stable_windows


def supports(backend: str, precision: str) -> bool:
    """Whether the bench backend (a registry choice) can run `precision` on any device."""
    from lenstrt.runtime.registry import supported_anywhere

    return supported_anywhere(backend, precision)


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


def run_config(cfg: dict[str, Any], timeout: float, spec: BenchSpec | None = None) -> dict[str, Any]:
    """One configuration alone, timed until stable: its result row fields, or {"ok": False, "error": ...}."""
    return run_group([cfg], spec or BenchSpec(timeout_s=timeout))[0]


def run_group(cfgs: list[dict[str, Any]], spec: BenchSpec, progress=None) -> list[dict[str, Any]]:
    """Configurations timed side by side: each loaded (one after another, so no load overlaps a timing),
    then round-robin timing windows until each is stable or at its cap."""
    from lenstrt.bench.process import WorkerProcess

    workers = []
    for c in cfgs:
        workers.append(WorkerProcess(c, spec.timeout_s))
    windows: list[list[dict[str, Any]]] = [[] for _ in cfgs]
    tol = spec.stable_pct / 100.0

    def rates(i: int) -> list[float]:
        return [w["calls"] * cfgs[i]["batch_size"] / w["seconds"] for w in windows[i]]

    def active(i: int) -> bool:
        return workers[i].ok and len(windows[i]) < spec.max_windows and not is_stable(rates(i), spec.stable_windows,
                                                                                       tol)
    while True:
        live = [i for i in range(len(cfgs)) if active(i)]
        if not live:
            break
        for i in live:
            w = workers[i].window(spec.window_s, spec.min_calls)
            if w is not None:
                windows[i].append(w)
    out = []
    for i, wp in enumerate(workers):
        res = wp.finish()
        if res.get("ok"):
            r = rates(i)
            sp = spread(r, spec.stable_windows, tol)
            lat = [t for w in windows[i][-spec.stable_windows:] for t in w["lat"]]
            res.update(images_per_s=sp["images_per_s"], spread=sp, latency=latency_stats(lat))
            if progress and not sp["stable"]:
                progress(f"    (not stable after {sp['windows']} windows: {sp['min']:.1f}-{sp['max']:.1f} img/s)")
        out.append(res)
    return out


def _label(c: dict[str, Any], res: dict[str, Any]) -> str:
    label = f"{c['backend']} {c['ensemble']}{':' + c['member'] if c.get('member') else ''} b{c['batch_size']}"
    if res.get("precision") and (c.get("precision") or c["backend"] != "torch"):
        label += f" {res['precision']}"
    elif c.get("precision"):
        label += f" {c['precision']}"
    return label


def _group_key(c: dict[str, Any]) -> tuple:
    return (c.get("member"), c["ensemble"], c["batch_size"])


def run_bench(bundle_dir: str | Path, spec: BenchSpec, data: list[str] | None = None, progress=print,
              on_row=None) -> dict[str, Any]:
    """Time every configuration of spec on the bundle. Each group's rows are reported (progress, and
    on_row(row) without its agreement, which needs the reference) as soon as the group is timed, so a
    caller that is stopped mid-run keeps the figures of the groups that finished."""
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
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cutouts, labels = _inputs(bundle, data, spec.n_agree, tmp)
        todo = configs(spec, bundle)
        ref_cfg = dict(REFERENCE)
        all_cfgs = [ref_cfg] + [c for c in todo if c != ref_cfg and c != {**ref_cfg, "precision": "fp32"}]
        full = [{**c, "bundle": str(bundle.root), "warmup_ms": spec.warmup_ms, "cutouts_npy": str(cutouts),
                 "out": str(tmp / f"r{i}.json"), "scores_out": str(tmp / f"s{i}.npy")} for i, c in enumerate(all_cfgs)]
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(all_cfgs):
            groups.setdefault(_group_key(c), []).append(i)
        by_index: dict[int, dict[str, Any]] = {}
        for idx in groups.values():
            progress(f"  timing {len(idx)} configuration(s) side by side: "
                     + ", ".join(_label(all_cfgs[i], {}) for i in idx))
            for i, res in zip(idx, run_group([full[i] for i in idx], spec, progress)):
                c = all_cfgs[i]
                row = {**c, "label": _label(c, res), **res}
                if res.get("ok"):
                    row["scores"] = np.load(full[i]["scores_out"])
                    if price is not None:
                        from lenstrt.cloud.pricing import usd_per_million

                        row["usd_per_million"] = usd_per_million(res["images_per_s"], price)
                    sp = res["spread"]
                    line = (f"{res['images_per_s']:9.1f} img/s  ({sp['min']:.1f}-{sp['max']:.1f} over "
                            f"{sp['windows']} windows{'' if sp['stable'] else ', not stable'})  "
                            f"p50 {res['latency']['p50_ms']:.2f} ms")
                else:
                    line = f"FAILED: {res['error']}"
                progress(f"  {row['label']:<42} " + line)
                if on_row:
                    on_row({k: v for k, v in row.items() if k != "scores"})
                by_index[i] = row
        rows = [by_index[i] for i in range(len(all_cfgs))]
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
        fp32 = m.artifact("onnx", "fp32")
        if fp32:
            g = onnx.load(str(bundle.path(fp32)), load_external_data=False).graph
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
    """Speed of each row relative to torch (eager fp32) with the same member and batch size (also set on the
    row as `vs_torch_fp32`; every whole-ensemble row, fused or concurrent, against torch running the members
    one after another: what a user without lenstrt's export runs), and concurrent/fused against separate at
    the same precision."""
    def key_of(r: dict) -> tuple:
        return (r.get("member"), "member" if r.get("member") else "ensemble", r["batch_size"])

    base = {key_of(r): r["images_per_s"] for r in rows
            if r.get("ok") and r["backend"] == "torch" and r.get("precision", "fp32") == "fp32"
            and (r.get("member") or r["ensemble"] == "separate")}
    out = []
    for r in rows:
        key = key_of(r)
        if r.get("ok") and key in base:
            r["vs_torch_fp32"] = r["images_per_s"] / base[key]
            if not (r["backend"] == "torch" and r.get("precision", "fp32") == "fp32"):
                out.append({"label": r["label"], "vs": "torch", "speedup": r["vs_torch_fp32"]})
    # concurrency and fusion against one-after-another, same backend, batch size and precision
    sep = {(r["backend"], r["batch_size"], r.get("precision")): r["images_per_s"] for r in rows
           if r.get("ok") and r["ensemble"] == "separate"}
    for r in rows:
        k = (r["backend"], r["batch_size"], r.get("precision"))
        if r.get("ok") and r["ensemble"] in ("concurrent", "fused") and k in sep:
            out.append({"label": r["label"], "vs": "separate", "speedup": r["images_per_s"] / sep[k]})
    return out
