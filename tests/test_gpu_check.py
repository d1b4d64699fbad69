"""The one-command GPU check (scripts/gpu_check.sh, benchmarks/gpu_check.py), exercised on the CPU:
the wrapper's one line on a machine without a GPU, and the driver's flow (`--cpu-dry-run`) in a
subprocess: every report section, skip reasons, a hung step recorded as such, a stopped run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
DRIVER = ROOT / "benchmarks" / "gpu_check.py"
NO_GPU = "no CUDA GPU here (torch.cuda.is_available() is False): nothing to check"
SECTIONS = ("## Environment", "## Steps", '## 1. pytest -m "gpu or trt"', "## 2. training throughput",
            "## 3. serve: streams vs sequential", "## 4. lenstrt bench, GPU rows", "## Skipped")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPU_CHECK_TEST_HANG", "PYTHON")}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def _report(out: Path) -> tuple[str, dict]:
    mds = sorted(out.glob("*-gpu-cpu-dry-run.md"))
    assert len(mds) == 1, list(out.iterdir())
    return mds[0].read_text(), json.loads(mds[0].with_suffix(".json").read_text())


@pytest.mark.skipif(_cuda(), reason="checks what the script does on a machine without a GPU")
def test_script_on_a_cpu_machine_says_so_in_one_line_and_exits_0():
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == [NO_GPU]


def test_script_without_torch_says_so_and_exits_0(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('no torch in this test')\n")
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                       env=_env(PYTHONPATH=str(tmp_path)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == [f"torch is not importable with {sys.executable}: nothing to check"]


def test_dry_run_report_sections_skips_and_a_hung_step(tmp_path):
    """A cheap dry run (no training, no bench): every section is in the report, skip reasons are given,
    and a step that hangs is killed at its cap, recorded as timed out, its figures so far kept."""
    out = tmp_path / "results"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(DRIVER), "--cpu-dry-run", "--out-dir", str(out), "--quiet",
                        "--steps", "pytest,prepare,serve", "--cap", "serve=4"],
                       capture_output=True, text=True, timeout=240, env=_env(GPU_CHECK_TEST_HANG="serve"), cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    md, rep = _report(out)
    for s in SECTIONS:
        assert s in md, s
    st = rep["steps"]
    assert st["pytest"]["status"] == "ok" and "skipped" in st["pytest"]["data"]["summary"]
    assert st["prepare"]["status"].startswith("ok")
    assert st["prepare"]["data"]["bundle"]["kind"] == "torch-only"
    assert st["serve"]["status"] == "timed out" and st["serve"]["data"]["before_the_hang"] == 1.0
    assert "killed after 4 s" in st["serve"]["error"]
    assert st["train"]["status"] == st["bench"]["status"] == "skipped"
    whats = {x["what"]: x["why"] for x in rep["skipped"]}
    assert "not in --steps" in whats["2. training throughput"]
    assert "no GPU runtime would use an ONNX bundle" in whats["ONNX / TensorRT bundle (ort-cuda and trt rows)"]
    assert "Dry run on the CPU" in md and "| timed out |" in md
    assert time.monotonic() - t0 < 120


def test_stopping_the_check_still_leaves_a_report(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, str(DRIVER), "--cpu-dry-run", "--out-dir", str(out), "--quiet",
                             "--steps", "prepare"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(GPU_CHECK_TEST_HANG="prepare"), cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            js = list(out.glob("*.json"))
            if js and json.loads(js[0].read_text())["steps"].get("prepare", {}).get("data"):
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM
    md, rep = _report(out)
    assert rep["steps"]["prepare"]["status"] == "interrupted"
    assert rep["steps"]["serve"]["status"] == "not run"
    assert "| interrupted |" in md


@pytest.mark.slow
def test_full_dry_run_measures_every_step(tmp_path):
    """Every step at tiny sizes on the CPU (about 3 minutes on 2 shared cores)."""
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, str(DRIVER), "--cpu-dry-run", "--out-dir", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    md, rep = _report(out)
    for s in SECTIONS:
        assert s in md, s
    st = rep["steps"]
    assert all(st[k]["status"].startswith("ok") for k in ("pytest", "train", "prepare", "serve", "bench")), st
    runs = st["train"]["data"]["runs"]
    assert {(r["arch"], r["precision"]) for r in runs} >= {("resnet18", "fp32"), ("resnet18", "bf16 autocast"),
                                                           ("resnet18", "fp16 autocast + GradScaler")}
    assert all(r["images_per_s"] > 0 and r["loss_finite"] for r in runs)
    serve = st["serve"]["data"]["runs"]
    assert {r["concurrency"] for r in serve} == {"streams", "sequential"}
    assert {r["readers"] for r in serve} == {1, 2}  # the reader processes' batch buffers (pinned on a GPU)
    plan = rep["plan"]  # the cutouts served through hard links, so more rows than bytes on disk
    assert all(r["catalog_rows"] == plan["serve_rows"] * plan["serve_copies"] == 512 for r in serve)
    assert all(0 < r["pipeline_efficiency"] <= 1.05 for r in serve)  # busy time: overlaps counted once
    rows = st["bench"]["data"]["rows"]
    assert {r["backend"] for r in rows} == {"torch", "torch-amp"} and all(r["ok"] for r in rows)
    assert not any(r.get("partial") for r in rows)  # every call returned: its final rows replaced the live ones
    assert sum(r.get("reference", False) for r in rows) == 1
    assert {r["ensemble"] for r in rows} >= {"member", "separate", "concurrent"}
    whats = " ".join(x["what"] + ": " + x["why"] for x in rep["skipped"])
    assert "onnxruntime-gpu not installed" in whats and "TensorRT not installed" in whats


def test_pytest_step_keeps_whole_error_messages(tmp_path):
    """The first GPU run's report cut each error to the terminal's width ('lenstrt.errors....'): the step
    now reads pytest's JUnit XML, which keeps the message and the traceback's last lines."""
    from conftest import load_script

    mod = load_script(DRIVER, "gpu_check_driver")
    long = "x" * 300
    (tmp_path / "test_boom.py").write_text(
        "import pytest\n"
        f"@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture failed: {long}')\n"
        "def test_a(broken):\n    pass\n"
        "def test_b():\n    assert 1 == 2, 'plainly wrong'\n"
        "def test_c():\n    pass\n")
    xml = tmp_path / "j.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_boom.py"),
                    f"--junitxml={xml}"], capture_output=True, timeout=120, cwd=tmp_path)
    probs = {p["test"].rsplit(".", 1)[-1]: p for p in mod.junit_problems(xml)}
    assert set(probs) == {"test_a", "test_b"}
    assert probs["test_a"]["kind"] == "error" and long in probs["test_a"]["message"]
    assert probs["test_b"]["kind"] == "failure" and "plainly wrong" in probs["test_b"]["message"]
    assert "test_boom.py" in probs["test_b"]["traceback_tail"]
    assert mod.junit_problems(tmp_path / "missing.xml") == []
