"""Bench figures you can trust: windows until three agree (or a cap), configurations interleaved round-robin,
the spread recorded; driven with scripted worker processes that speak the worker protocol."""

import json
import sys

import pytest

from lenstrt.bench import process
from lenstrt.bench.harness import BenchSpec, run_config, run_group
from lenstrt.bench.report import markdown, table_rows
from lenstrt.bench.stats import is_stable, rel_spread, spread

# A worker that replays the throughputs it is told (cfg["rates"], images/s at batch 1) and logs each window.
FAKE = r"""
import json, sys
cfg = json.load(open(sys.argv[1]))
R = "@@lenstrt-bench "
print("a library printing to stdout", flush=True)
print(R + json.dumps({"ready": True}), flush=True)
k = 0
for line in sys.stdin:
    if line.startswith("window"):
        rate = cfg["rates"][min(k, len(cfg["rates"]) - 1)]
        k += 1
        with open(cfg["log"], "a") as f:
            f.write(cfg["name"] + "\n")
        print(R + json.dumps({"calls": 10, "seconds": 10 / rate, "lat": [1 / rate] * 10}), flush=True)
    elif line.startswith("finish"):
        json.dump({"ok": True, "precision": "fp32", "providers": []}, open(cfg["out"], "w"))
        print(R + json.dumps({"done": True}), flush=True)
        break
"""


@pytest.fixture()
def fake_worker(tmp_path, monkeypatch):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE)
    monkeypatch.setattr(process, "WORKER_CMD", [sys.executable, str(script)])
    log = tmp_path / "order.log"

    def cfg(name, rates):
        return {"name": name, "rates": rates, "log": str(log), "out": str(tmp_path / f"{name}.json"),
                "batch_size": 1}
    return cfg, log


def test_stability_rule():
    assert rel_spread([100, 104, 102]) == pytest.approx(0.04 / 1.02, rel=1e-6)
    assert is_stable([50, 100, 101, 103], 3, 0.05) and not is_stable([100, 110, 100], 3, 0.05)
    assert not is_stable([100, 100], 3, 0.05)
    s = spread([60, 100, 101, 103], 3, 0.05)
    assert s["stable"] and s["images_per_s"] == 101 and s["min"] == 60 and s["max"] == 103 and s["windows"] == 4


def test_group_is_interleaved_and_each_stops_when_stable(fake_worker):
    cfg, log = fake_worker
    spec = BenchSpec(duration_s=0.03, max_windows=8, timeout_s=60)
    a = cfg("a", [100, 150, 100, 101, 100])      # noisy start: stable from its 5th window
    b = cfg("b", [200])                          # stable at once: 3 windows
    c = cfg("c", [100, 130])                     # alternates: never stable, capped
    c["rates"] = [100, 130] * 10
    ra, rb, rc = run_group([a, b, c], spec)
    order = log.read_text().split()
    assert order[:6] == ["a", "b", "c", "a", "b", "c"]   # round-robin, not one configuration then the next
    assert order.count("b") == 3 and order.count("a") == 5 and order.count("c") == 8
    assert ra["spread"]["stable"] and ra["images_per_s"] == pytest.approx(100)
    assert rb["images_per_s"] == pytest.approx(200) and rb["latency"]["p50_ms"] == pytest.approx(5)
    assert not rc["spread"]["stable"] and rc["spread"]["windows"] == 8
    assert rc["spread"]["min"] == pytest.approx(100) and rc["spread"]["max"] == pytest.approx(130)


def test_spread_in_the_report(fake_worker):
    cfg, _ = fake_worker
    (r,) = run_group([cfg("a", [100, 130] * 10)], BenchSpec(duration_s=0.03, max_windows=4, timeout_s=60))
    row = {"label": "ort separate b1", "ok": True, "backend": "ort", "ensemble": "separate", "batch_size": 1,
           "vs_torch_fp32": 2.5, **r}
    cells = table_rows({"rows": [row]})[0]
    assert cells[2] == "100.0-130.0 (4!)" and cells[3] == "2.50x"
    rep = {"rows": [row], "env": {"cpu": "x", "cpu_cores": 2, "gpus": [], "torch": "t", "onnxruntime": "o",
                                  "tensorrt": None}, "created": "now", "bundle": "b", "members": ["m"],
           "agreement_set": {"n": 8}, "price": None, "ratios": [], "spec": {"stable_pct": 5.0}}
    md = markdown(rep)
    assert "| min-max (windows) | vs torch fp32 |" in md and "within 5.0%" in md
    json.dumps(rep)  # bench.json takes it as it is


def test_a_crashing_worker_is_a_failed_row(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "WORKER_CMD", [sys.executable, "-c",
                                                "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    assert run_config({"out": str(tmp_path / "r.json"), "batch_size": 1}, timeout=30) == \
        {"ok": False, "error": "crashed (SIGSEGV)"}


def test_a_worker_error_is_its_last_stderr_line(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "WORKER_CMD", [sys.executable, "-c",
                                                "import sys; sys.exit('BundleError: no such bundle')"])
    assert run_config({"out": str(tmp_path / "r.json"), "batch_size": 1}, timeout=30)["error"] == \
        "BundleError: no such bundle"
