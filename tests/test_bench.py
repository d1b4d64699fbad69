import json
import sys

import numpy as np
import pytest

from lenstrt.bench.harness import BenchSpec, configs, ratios, run_bench, run_config
from lenstrt.bench.report import markdown, write
from lenstrt.bench.stats import latency_stats, top_k_overlap
from lenstrt.bundle import Bundle
from lenstrt.cloud.pricing import hours_for, load_prices, lookup, usd_per_million
from lenstrt.errors import ConfigError


def test_latency_percentiles_on_known_samples():
    s = latency_stats(np.arange(1, 101) / 1000.0)  # 1..100 ms
    assert s["n"] == 100 and s["min_ms"] == pytest.approx(1) and s["max_ms"] == pytest.approx(100)
    assert s["mean_ms"] == pytest.approx(50.5) and s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert latency_stats([]) == {}


def test_top_k_overlap():
    a = np.arange(10.0)
    assert top_k_overlap(a, a, 3) == 1.0
    assert top_k_overlap(a, -a, 3) == 0.0
    assert top_k_overlap(a, np.r_[a[:-1], -1.0], 3) == pytest.approx(2 / 3)


def test_cost_arithmetic_and_price_table():
    assert usd_per_million(1000.0, 3.6) == pytest.approx(1.0)  # 3.6 M img/h at $3.6/h
    assert hours_for(1.5e9, 10_000) == pytest.approx(41.666, rel=1e-3)
    prices = load_prices()
    for inst in ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "p3.2xlarge", "p4d.24xlarge", "p5.48xlarge",
                 "g2-standard-4", "a2-highgpu-1g", "NC4as_T4_v3", "NC6s_v3", "NC24ads_A100_v4"):
        p = prices[inst]
        assert 0 < p.spot_usd_h < p.on_demand_usd_h and p.price_date and p.source
    assert lookup("g4dn.xlarge").gpu == "T4"
    with pytest.raises(ConfigError, match="unknown instance"):
        lookup("m5.large")


def test_configs_and_ratios(bundle_dir):
    b = Bundle(bundle_dir)
    cfgs = configs(BenchSpec(backends=("torch", "ort"), batch_sizes=(1,)), b)
    labels = [(c["backend"], c["ensemble"], c.get("member")) for c in cfgs]
    assert ("torch", "fused", None) not in labels and ("ort", "fused", None) in labels
    assert ("ort", "member", "vit_tiny-s1000") in labels
    rows = [{"ok": True, "backend": "torch", "ensemble": "separate", "batch_size": 1, "images_per_s": 100.0, "label": "t"},
            {"ok": True, "backend": "ort", "ensemble": "separate", "batch_size": 1, "images_per_s": 150.0, "label": "o"},
            {"ok": True, "backend": "ort", "ensemble": "fused", "batch_size": 1, "images_per_s": 165.0, "label": "f"}]
    rows.append({"ok": True, "backend": "torch", "ensemble": "member", "member": "m", "batch_size": 1,
                 "images_per_s": 300.0, "label": "tm"})
    rows.append({"ok": True, "backend": "ort", "ensemble": "member", "member": "m", "batch_size": 1,
                 "images_per_s": 450.0, "label": "om"})
    r = {(q["label"], q["vs"]): q["speedup"] for q in ratios(rows)}
    assert r[("o", "torch")] == pytest.approx(1.5) and r[("f", "separate")] == pytest.approx(1.1)
    # the fused ensemble against torch running the members one after another; a member against its own torch
    assert r[("f", "torch")] == pytest.approx(1.65) and r[("om", "torch")] == pytest.approx(1.5)
    assert rows[2]["vs_torch_fp32"] == pytest.approx(1.65)


def test_crashing_backend_becomes_failed_row(tmp_path, monkeypatch):
    import lenstrt.bench.process as p

    monkeypatch.setattr(p, "WORKER_CMD", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    row = run_config({"out": str(tmp_path / "r.json"), "batch_size": 1}, timeout=30)
    assert row == {"ok": False, "error": "crashed (SIGSEGV)"}


def test_tiny_real_run_and_report(bundle_dir, tmp_path):
    # n_agree > 100: with fewer rows top100_overlap compares every row with every row and is always 1.0
    spec = BenchSpec(backends=("torch", "ort"), batch_sizes=(1, 4), ensemble=("separate", "fused"), warmup_ms=10,
                     duration_s=0.3, n_agree=128, price_per_hour=1.0)
    seen: list[dict] = []
    rep = run_bench(bundle_dir, spec, progress=lambda *a: None, on_row=seen.append)
    assert rep["schema"] == "lenstrt-bench/2" and rep["env"]["cpu_cores"] >= 1
    # each row handed over as its group finished (what a caller stopped mid-run keeps): every row, no scores
    assert sorted(r["label"] for r in seen) == sorted(r["label"] for r in rep["rows"])
    assert seen[0]["label"] == rep["rows"][0]["label"] and not any("scores" in r for r in seen)
    assert {r["label"]: r["images_per_s"] for r in seen} == {r["label"]: r["images_per_s"] for r in rep["rows"]}
    ok = [r for r in rep["rows"] if r["ok"]]
    # the reference (torch separate b64), torch separate b1/b4, ort separate and fused b1/b4
    assert len(ok) == len(rep["rows"]) == 1 + 2 + 4
    for r in ok:
        assert r["images_per_s"] > 0 and r["latency"]["p50_ms"] > 0 and r["usd_per_million"] > 0
        sp = r["spread"]  # timed in windows until three agree (or the cap), the spread kept
        assert 3 <= sp["windows"] <= spec.max_windows and sp["min"] <= r["images_per_s"] <= sp["max"]
        assert r["ensemble"] != "separate" or r["vs_torch_fp32"] > 0  # ratio vs torch fp32 per row
        assert r["agreement"]["max_abs_prob_diff"] < 1e-3 and r["agreement"]["top100_overlap"] > 0.9
    assert any("CPUExecutionProvider" in r["providers"] for r in ok if r["backend"] == "ort")
    paths = write(rep, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["rows"][0]["backend"] == "torch" and "ratios" in data
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "| configuration | img/s |" in markdown(rep)
