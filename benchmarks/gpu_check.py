#!/usr/bin/env python3
"""The one-command GPU check (issue #11): `bash scripts/gpu_check.sh` or `make gpu-check`.

On a machine with an NVIDIA GPU, in under 8 minutes:
  1. `pytest -m "gpu or trt"`;
  2. training throughput, fp32 vs fp16 autocast + GradScaler vs bf16 autocast (resnet18, then vit_small
     when time allows), with the project's own step (`lenstrt.train.trainer.forward_loss`);
  3. `lenstrt.serve.pipeline.serve` of a 3-member ensemble, concurrency `streams` vs `sequential`, and once
     with 2 reader processes (the pinned batch buffers of `serve/readers.py`, a GPU-only path);
  4. the GPU rows of `lenstrt bench` (`lenstrt.bench.harness.run_bench`);
and it writes benchmarks/results/<date>-gpu-<gpu>.md (and .json) after every step, so a kill still leaves
the figures measured so far. Each step runs in a process group of its own with a hard timeout; a step
whose modules are missing, and each row that needs TensorRT or onnxruntime-gpu where they are absent,
is listed under "Skipped" with the reason. `--cpu-dry-run` runs the same flow on the CPU at tiny sizes
(tests/test_gpu_check.py). Decisions and how to read the report: docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository on the path, installed or not
    sys.path.insert(0, str(ROOT))

SCHEMA = "lenstrt-gpu-check/1"
NO_GPU = "no CUDA GPU here (torch.cuda.is_available() is False): nothing to check"
PROBE = ("torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime", "tensorrt", "pytest", "caustics",
         "h5py", "pyarrow", "click", "rich", "astropy", "yaml", "matplotlib", "pynvml")
STEPS = ("pytest", "train", "prepare", "serve", "bench")
TITLES = {"env": "environment", "pytest": '1. pytest -m "gpu or trt"', "train": "2. training throughput",
          "prepare": "data, checkpoints and bundle for 3 and 4", "serve": "3. serve: streams vs sequential",
          "bench": "4. lenstrt bench, GPU rows"}
# what each step imports; a step whose needs are not importable is skipped with the reason
NEEDS = {"pytest": ("pytest",), "train": ("torch", "torchvision", "numpy"),
         "prepare": ("torch", "torchvision", "numpy"), "serve": ("torch", "torchvision", "numpy", "onnxruntime", "pyarrow"),
         "bench": ("torch", "torchvision", "numpy")}
WHY_NEEDED = {"pyarrow": "serve writes catalog parts with pyarrow, Parquet and CSV alike",
              "onnxruntime": "serve's backend choice (runtime.select.detect) imports it",
              "torchvision": "lenstrt.models builds resnet18 / vit_small from torchvision"}

# Sizes. GPU: what the issue asks for, timed to fit 8 minutes with margin (docs/gpu_check.md has the sums).
GPU_PLAN: dict[str, Any] = {
    "device": "cuda", "bands": 3, "image": 64, "members": 3,
    "train_batch": 256, "train_seconds": 18.0, "train_warmup_steps": 5, "vit_seconds": 6.0,
    # serve reads the 16,384 cutouts 4 times (hard links): 16,384 streamed in ~0.5 s on the first H200 run
    "serve_rows": 16384, "serve_copies": 4, "warm_rows": 1024, "serve_batch": 256, "serve_reps": 2,
    "bench_batches": [1, 256], "bench_modes": ["members", "separate", "concurrent"],
    # ~14 s a configuration on an H200 with up to 6 windows (process start, CUDA context, load, warm-up);
    # at most 4 windows: ~10 s measured
    "bench_warmup_ms": 300.0, "bench_duration_s": 1.0, "bench_config_timeout_s": 90.0, "bench_config_est_s": 11.0,
    "bench_max_windows": 4,
    "n_agree": 256, "export_batch": [1, 256, 512], "pytest_targets": [],
    "budget_s": 450.0,
    "caps": {"env": 90, "pytest": 100, "train": 140, "prepare": 90, "serve": 70, "bench": 220},
    "min_s": {"pytest": 20, "train": 30, "prepare": 15, "serve": 20, "bench": 40},
}
# Dry run: every step on the CPU at tiny sizes; the figures test the flow, they measure nothing.
DRY_PLAN: dict[str, Any] = {
    **GPU_PLAN, "device": "cpu", "image": 32, "members": 2,
    "train_batch": 8, "train_seconds": 0.5, "train_warmup_steps": 1, "vit_seconds": 0.3,
    "serve_rows": 256, "serve_copies": 2, "warm_rows": 32, "serve_batch": 64, "serve_reps": 1,
    "bench_batches": [8], "bench_warmup_ms": 10.0, "bench_duration_s": 0.1, "bench_config_timeout_s": 60.0,
    "bench_config_est_s": 12.0, "bench_max_windows": 3, "n_agree": 32, "export_batch": [1, 16, 64], "pytest_targets": ["tests/test_gpu.py"],
    "budget_s": 300.0,
    "caps": {"env": 60, "pytest": 60, "train": 60, "prepare": 120, "serve": 60, "bench": 200},
    "min_s": {"pytest": 10, "train": 10, "prepare": 10, "serve": 10, "bench": 20},
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "unknown"


# ---------------------------------------------------------------------------------------------------
# steps (each runs in a child process: `gpu_check.py --step NAME --work DIR --deadline EPOCH`)
# ---------------------------------------------------------------------------------------------------
class Ctx:
    """One step's state: its plan, its deadline, and its result file, rewritten after every figure."""

    def __init__(self, name: str, work: Path, deadline: float):
        self.name, self.work, self.deadline = name, work, deadline
        self.plan: dict[str, Any] = json.loads((work / "plan.json").read_text())
        self.out: dict[str, Any] = {"data": {}, "skipped": [], "notes": []}
        self.dry = self.plan["dry_run"]
        self.save()

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        _atomic_write(self.work / f"{self.name}.json", json.dumps(self.out, indent=1, default=str))

    def skip(self, what: str, why: str) -> None:
        self.out["skipped"].append({"what": what, "why": why})
        self.log(f"skipped {what}: {why}")
        self.save()

    def note(self, text: str) -> None:
        self.out["notes"].append(text)
        self.save()

    def log(self, *a: Any) -> None:
        print(f"[{self.name}]", *a, flush=True)

    def result(self, step: str) -> dict[str, Any]:
        p = self.work / f"{step}.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def modules(self) -> dict[str, Any]:
        return self.result("env").get("data", {}).get("modules", {})

    def importable(self, mod: str) -> bool:
        m = self.modules().get(mod)
        return bool(m and m.get("ok"))


def _probe(mod: str) -> dict[str, Any]:
    import importlib

    try:
        m = importlib.import_module(mod)
    except Exception as exc:  # ImportError, or a broken install
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]}
    if mod == "tensorrt" and not hasattr(m, "Builder"):
        return {"ok": False, "error": "a stub without the TensorRT runtime"}
    with warnings.catch_warnings():  # click 8.2+ deprecates __version__
        warnings.simplefilter("ignore")
        return {"ok": True, "version": str(getattr(m, "__version__", "unknown"))}


def _driver_version() -> str | None:
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    with contextlib.suppress(Exception):
        p = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        if p.returncode == 0 and p.stdout.strip():
            return p.stdout.strip().splitlines()[0]
    return None


def step_env(ctx: Ctx) -> None:
    d = ctx.out["data"]
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    commit = None
    with contextlib.suppress(Exception):
        p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10)
        commit = p.stdout.strip() or None
        st = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
        if commit and st.returncode == 0 and st.stdout.strip():
            commit += " + uncommitted changes"  # figures from a working tree, not from that commit alone
    d.update(python=sys.version.split()[0], executable=sys.executable, platform=platform.platform(), cpu=cpu,
             cpu_cores=os.cpu_count(), repo=str(ROOT), git_commit=commit)
    d["modules"] = {}
    for m in PROBE:  # saved one by one: a module whose import kills the process still leaves the others
        d["modules"][m] = _probe(m)
        ctx.save()
    if d["modules"]["onnxruntime"]["ok"]:
        import onnxruntime as ort

        d["ort_providers"] = list(ort.get_available_providers())
    if d["modules"]["torch"]["ok"]:
        import torch

        d["torch"] = str(torch.__version__)
        d["torch_cuda"] = torch.version.cuda
        d["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        d["cuda_available"] = bool(torch.cuda.is_available())
        if d["cuda_available"]:
            gpus = []
            for i in range(torch.cuda.device_count()):
                pr = torch.cuda.get_device_properties(i)
                gpus.append({"index": i, "name": pr.name, "memory_gib": round(pr.total_memory / 2**30, 1),
                             "compute_capability": f"{pr.major}.{pr.minor}",
                             "multiprocessors": pr.multi_processor_count})
            d["gpus"] = gpus
            d["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
            d["driver"] = _driver_version()
    ctx.save()


def step_pytest(ctx: Ctx) -> None:
    p = ctx.plan
    junit = ctx.work / "pytest-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu or trt", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", *p["pytest_targets"]]
    d = ctx.out["data"]
    d["command"] = " ".join(["python", *cmd[1:3], '-m "gpu or trt"', *cmd[5:]])
    # the summary lines are cut to the terminal's width: the messages come from the JUnit XML, whole
    cmd.append(f"--junitxml={junit}")
    missing = [m for m in ("caustics", "h5py", "onnx", "onnxscript", "onnxruntime", "pyarrow")
               if not ctx.importable(m)]
    if missing:
        ctx.note(f"not importable here, needed by the GPU tests' fixtures (simulated data, export): "
                 f"{', '.join(missing)}; tests that need them error or skip")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, ctx.left() - 3))
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc = None
        d["timed_out"] = True
    d["seconds"] = round(time.perf_counter() - t0, 1)
    d["rc"] = rc
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    summ = [ln for ln in lines if re.search(r"\b(passed|failed|skipped|error|errors|deselected|no tests ran)\b", ln)
            and (ln.startswith("=") or re.match(r"^\d+ \w+", ln))]
    d["summary"] = summ[-1].strip("= ") if summ else (lines[-1] if lines else "(no output)")
    d["counts"] = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)",
                                                       d["summary"])}
    d["failures"] = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:30]
    d["skip_reasons"] = [ln for ln in lines if ln.startswith("SKIPPED")][:30]
    d["problems"] = junit_problems(junit)
    d["tail"] = lines[-15:]
    ctx.save()
    if rc is None:
        raise TimeoutError(f"pytest ran past its budget ({d['seconds']} s)")


def junit_problems(path: Path, limit: int = 30) -> list[dict[str, str]]:
    """Failed and errored tests from pytest's JUnit XML: the test, the exception's message (whole, where the
    terminal summary cuts it) and the last lines of its traceback, which name the file and line."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        for el in case:
            if el.tag not in ("failure", "error"):
                continue
            where = ".".join(x for x in (case.get("classname"), case.get("name")) if x)
            text = [ln for ln in (el.text or "").splitlines() if ln.strip()]
            out.append({"test": where, "kind": el.tag, "message": (el.get("message") or "")[:1500],
                        "traceback_tail": "\n".join(text[-12:])[-2500:]})
    return out[:limit]


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _train_rate(arch: str, label: str, dtype, seconds: float, p: dict[str, Any]) -> dict[str, Any]:
    """img/s of Trainer.train_member's inner loop: forward_loss, then backward / unscale + clip /
    scaler.step / update exactly as there, on random batches held in (pinned) host memory."""
    import torch

    from lenstrt.config import TrainingConfig
    from lenstrt.models import create_model, prefers_channels_last
    from lenstrt.train.trainer import arch_kwargs, forward_loss, optimizer_step

    cfg, dev, bs = TrainingConfig(), p["device"], p["train_batch"]
    cuda = dev.startswith("cuda")
    torch.manual_seed(0)
    model = create_model(arch, p["bands"], p["image"], **arch_kwargs(arch, cfg)).to(dev)
    channels_last = cfg.channels_last and prefers_channels_last(arch)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dev.split(":")[0], enabled=dtype is torch.float16)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x = torch.randn(bs, p["bands"], p["image"], p["image"], generator=g)
        y = (torch.rand(bs, generator=g) < 0.5).float()
        batches.append((x.pin_memory(), y.pin_memory()) if cuda else (x, y))

    def one(step: int):
        x, y = batches[step % len(batches)]
        loss = forward_loss(model, x, y, dev, step, 0, cfg.augment, channels_last, dtype)
        optimizer_step(loss, model, opt, scaler, cfg.gradient_clip)
        return loss

    t_w = time.perf_counter()
    warm = p["train_warmup_steps"]
    for i in range(warm):
        loss = one(i)
    _sync(dev)
    warm_s = time.perf_counter() - t_w
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loss = one(warm + n)
        n += 1
    _sync(dev)
    el = time.perf_counter() - t0
    lv = float(loss.item())
    return {"arch": arch, "precision": label, "images_per_s": n * bs / el, "step_ms": el / n * 1e3, "steps": n,
            "seconds": round(el, 2), "batch": bs, "warmup_steps": warm, "warmup_s": round(warm_s, 2),
            "final_loss": lv, "loss_finite": lv == lv and abs(lv) != float("inf"),
            "grad_scaler": scaler.is_enabled(), "loss_scale": scaler.get_scale() if scaler.is_enabled() else None,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "channels_last": channels_last}


def step_train(ctx: Ctx) -> None:
    import torch

    p, d = ctx.plan, ctx.out["data"]
    d.update(device=p["device"], batch=p["train_batch"], shape=[p["bands"], p["image"], p["image"]], runs=[])
    with contextlib.suppress(Exception):  # fp32 as the trainer runs it: torch's TF32 defaults, untouched
        d["tf32"] = {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                     "cudnn": bool(torch.backends.cudnn.allow_tf32)}
    variants: list[tuple[str, Any]] = [("fp32", None), ("fp16 autocast + GradScaler", torch.float16),
                                       ("bf16 autocast", torch.bfloat16)]
    if p["device"] == "cuda" and not torch.cuda.is_bf16_supported():
        ctx.skip("train bf16 autocast", "this GPU does not support bf16 (torch.cuda.is_bf16_supported() is False)")
        variants = variants[:2]
    overhead = 6.0 if p["device"] == "cuda" else 3.0  # model build + warm-up steps, per variant
    # mobilenet_v3_small: the cheap CNN of the cross-simulator recipes (docs/training.md, "The quality bar")
    for arch, secs in (("resnet18", p["train_seconds"]), ("mobilenet_v3_small", p["vit_seconds"]),
                       ("vit_small", p["vit_seconds"])):
        need = len(variants) * (secs + overhead)
        if arch != "resnet18" and ctx.left() < need:
            ctx.skip(f"train {arch}", f"time budget: needs ~{need:.0f} s, {ctx.left():.0f} s left in the step")
            continue
        for k, (label, dtype) in enumerate(variants):
            rest = len(variants) - k
            s = min(secs, max(0.5, (ctx.left() - 4) / rest - overhead))
            ctx.log(f"{arch} {label}: {s:.1f} s")
            try:
                r = _train_rate(arch, label, dtype, s, p)
            except Exception as exc:
                r = {"arch": arch, "precision": label, "error": f"{type(exc).__name__}: {exc}"[:400]}
                ctx.log(traceback.format_exc())
            d["runs"].append(r)
            ctx.log(f"  {r.get('images_per_s', 0):,.1f} img/s" if "error" not in r else f"  FAILED {r['error']}")
            ctx.save()
            if p["device"] == "cuda":
                torch.cuda.empty_cache()


def _write_cutouts(path: Path, n: int, p: dict[str, Any]) -> Path:
    """n float32 cutouts in a .npy (lenstrt readers memory-map it): 1024 random ones, tiled and rescaled."""
    import numpy as np

    shape = (p["bands"], p["image"], p["image"])
    rng = np.random.default_rng(0)
    base = rng.standard_normal((min(n, 1024), *shape), dtype=np.float32) * 5 + 20
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
    for k, i in enumerate(range(0, n, len(base))):
        m = min(len(base), n - i)
        mm[i:i + m] = base[:m] * np.float32(1 + 0.01 * k)
    mm.flush()
    del mm
    return path


def _checkpoints(run: Path, p: dict[str, Any]) -> list[Path]:
    """Random-init resnet18 members saved with the payload `lenstrt train` writes (Trainer._payload)."""
    from dataclasses import asdict

    import torch

    from lenstrt import __version__
    from lenstrt import checkpoint as ck
    from lenstrt.config import TrainingConfig
    from lenstrt.models import create_model
    from lenstrt.models.preprocess import PREPROCESS_SPEC

    tc = TrainingConfig()
    cfg = asdict(tc)
    cfg["arch"] = list(cfg["arch"])
    out = []
    for seed in range(p["members"]):
        torch.manual_seed(seed)
        kw = {"dropout": tc.dropout, "keep_stem_resolution": tc.keep_stem_resolution}
        model = create_model("resnet18", p["bands"], p["image"], **kw)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        payload = {
            "state_dict": state, "arch": "resnet18", "arch_kwargs": kw, "bands": [f"band{i}" for i in range(p["bands"])],
            "image_size": p["image"], "survey": "unknown", "preprocess": dict(PREPROCESS_SPEC), "temperature": 1.0,
            "metrics": {}, "config": cfg, "seed": seed, "step": 0, "train_lens_fraction": 0.5, "history": [],
            "versions": {"lenstrt": __version__, "torch": str(torch.__version__)}, "data_hash": "gpu-check-random-init",
            "precision": "float32",
        }
        out.append(ck.save(run / f"resnet18-s{seed}" / "best.pt", payload))
    return out


def _torch_only_bundle(ckpts: list[Path], out: Path, why: str) -> None:
    """A bundle with checkpoints and no ONNX (what the torch backend reads), for machines that cannot
    export: the manifest follows lenstrt.bundle's schema, with the reason recorded in it."""
    import shutil

    import torch

    from lenstrt import __version__
    from lenstrt import checkpoint as ck
    from lenstrt.bundle import MANIFEST, SCHEMA, Bundle
    from lenstrt.io import sha256_file, write_json
    from lenstrt.models import export_spec

    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    members = []
    first = None
    for p in ckpts:
        c = ck.load(p)
        first = first or c
        name = p.parent.name
        rel = f"checkpoints/{name}.pt"
        shutil.copyfile(p, out / rel)
        members.append({"name": name, "arch": c["arch"], "arch_kwargs": c["arch_kwargs"], "temperature": c["temperature"],
                        "train_lens_fraction": c.get("train_lens_fraction", 0.5), "seed": c.get("seed"),
                        "metrics": {}, "source_checkpoint": str(p),
                        "checkpoint": {"path": rel, "sha256": sha256_file(out / rel), "bytes": (out / rel).stat().st_size},
                        "artifacts": {}, "agreement": {}})
    assert first is not None
    size = first["image_size"]
    write_json(out / MANIFEST, {
        "schema": SCHEMA, "created": _now(), "lenstrt_version": __version__, "torch_version": str(torch.__version__),
        "input": {"name": export_spec(first["arch"]).input_name, "shape": [-1, len(first["bands"]), size, size],
                  "dtype": "float32", "bands": first["bands"], "image_size": size, "survey": first.get("survey")},
        "output": {"name": "logits", "shape": [-1, 1],
                   "meaning": "logit; calibrated lens probability = sigmoid(logit / member.temperature)"},
        "preprocess": first["preprocess"], "batch": {"min": 1, "opt": 256, "max": 1024}, "validation_data": None,
        "members": members, "fused": None, "tensorrt": {"built": False, "why": why}, "engines": [],
        "note": f"torch-only bundle written by benchmarks/gpu_check.py without `lenstrt export`: {why}",
    })
    Bundle(out).members  # noqa: B018 - the project's reader accepts it


def _gpu_runtimes(ctx: Ctx) -> tuple[bool, bool, list[str]]:
    """(onnxruntime has CUDA, TensorRT usable, ORT providers)."""
    provs = ctx.result("env").get("data", {}).get("ort_providers", [])
    return "CUDAExecutionProvider" in provs, ctx.importable("tensorrt"), provs


def _export_reason(ctx: Ctx) -> str | None:
    """Why no ONNX bundle is exported here (None: export it)."""
    mode = ctx.plan["export"]
    if mode == "never":
        return "--export never"
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not ctx.importable(m)]
    if missing:
        return f"`lenstrt export` needs {', '.join(missing)}, not importable here"
    ort_cuda, trt, provs = _gpu_runtimes(ctx)
    if mode == "auto" and not (ort_cuda or trt):
        return (f"no GPU runtime would use an ONNX bundle (onnxruntime providers: {', '.join(provs)}; TensorRT not "
                "installed), so export was not run")
    return None


def step_prepare(ctx: Ctx) -> None:
    p, d, w = ctx.plan, ctx.out["data"], ctx.work
    t0 = time.perf_counter()
    d["cutouts"] = str(_write_cutouts(w / "cutouts.npy", p["serve_rows"], p))
    d["warm"] = str(_write_cutouts(w / "warm.npy", p["warm_rows"], p))
    d["cutouts_s"] = round(time.perf_counter() - t0, 1)
    ctx.save()
    t0 = time.perf_counter()
    ckpts = _checkpoints(w / "run", p)
    d["checkpoints"] = [str(c) for c in ckpts]
    d["checkpoints_s"] = round(time.perf_counter() - t0, 1)
    ctx.save()
    bundle = w / "bundle"
    why = _export_reason(ctx)
    if why is None:
        from lenstrt.export.pipeline import export_bundle

        t0 = time.perf_counter()
        try:
            m = export_bundle([str(c) for c in ckpts], bundle, fp16=True, fuse=False, batch=tuple(p["export_batch"]),
                              data=[d["cutouts"]], n_val=p["n_agree"], log=ctx.log)
            d["bundle"] = {"path": str(bundle), "kind": "export", "seconds": round(time.perf_counter() - t0, 1),
                           "tensorrt": m.get("tensorrt"), "members": [x["name"] for x in m["members"]],
                           "artifacts": sorted({k for x in m["members"] for k in x.get("artifacts", {})})}
            ctx.save()
            return
        except Exception as exc:
            why = f"`lenstrt export` failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
            ctx.log(traceback.format_exc())
            ctx.note(f"EXPORT FAILED (a bug to look at): {why}")
    _torch_only_bundle(ckpts, bundle, why)
    d["bundle"] = {"path": str(bundle), "kind": "torch-only", "why": why, "members": [c.parent.name for c in ckpts]}
    ctx.skip("ONNX / TensorRT bundle (ort-cuda and trt rows)", why)


def _bundle_backends(ctx: Ctx, what: str) -> list[str]:
    """GPU backends beyond torch that this machine and bundle can run; each other one is skipped with why."""
    b = ctx.result("prepare")["data"]["bundle"]
    ort_cuda, trt, provs = _gpu_runtimes(ctx)
    exported = b["kind"] == "export"
    no_bundle = f"no ONNX bundle ({b.get('why')})"
    out = []
    if ort_cuda and exported:
        out.append("ort-cuda")
    elif ctx.dry and exported:
        out.append("ort")
        ctx.note(f"{what}: dry run: ort on the CPU stands in for ort-cuda")
    else:
        ctx.skip(f"{what}: ort-cuda", no_bundle if ort_cuda else
                 f"onnxruntime-gpu not installed (onnxruntime providers: {', '.join(provs) or 'onnxruntime missing'})")
    if trt and "plan" in b.get("artifacts", []):
        out.append("trt")
    elif not trt:
        err = ctx.modules().get("tensorrt", {}).get("error")
        ctx.skip(f"{what}: trt", "TensorRT not installed" + (f" ({err})" if err else ""))
    else:
        ctx.skip(f"{what}: trt", no_bundle if not exported else
                 f"no engines in the bundle: {(b.get('tensorrt') or {}).get('why')}")
    return out


def step_serve(ctx: Ctx) -> None:
    import shutil

    from lenstrt.serve.pipeline import ServeOptions, serve

    p, d = ctx.plan, ctx.out["data"]
    prep = ctx.result("prepare")["data"]
    bundle, npy, warm = prep["bundle"]["path"], prep["cutouts"], prep["warm"]
    fmt = "parquet"
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        fmt = "csv"
    inputs = [npy]
    for k in range(1, int(p.get("serve_copies", 1))):  # the same bytes under other names: no disk, no copy
        link = Path(npy).with_name(f"cutouts-{k}.npy")
        if not link.exists():
            os.link(npy, link)
        inputs.append(str(link))
    d.update(rows=p["serve_rows"] * len(inputs), batch=p["serve_batch"], format=fmt, members=len(prep["checkpoints"]),
             bundle_kind=prep["bundle"]["kind"], runs=[], files=len(inputs))
    backends = ["torch"] + _bundle_backends(ctx, "serve")
    est = None
    for b in backends:
        if est and ctx.left() < 2.5 * est:
            ctx.skip(f"serve {b}", f"time budget: {ctx.left():.0f} s left in the step")
            continue
        out = ctx.work / "serve_out"
        t0 = time.perf_counter()  # warm-up run (CUDA context, cuDNN plans, allocator): not reported
        serve(bundle, [warm], out, ServeOptions(backend=b, batch_size=p["serve_batch"], fmt=fmt, resume=False),
              progress=False, log=lambda *a: None)
        d.setdefault("warmup_s", {})[b] = round(time.perf_counter() - t0, 1)
        for rep in range(p["serve_reps"]):
            # the last run reads with 2 reader processes: the pinned-buffer path exists only on a GPU
            for conc, readers in (("streams", 1), ("sequential", 1)) + ((("streams", 2),) if rep == 0 else ()):
                if est and ctx.left() < 1.5 * est:
                    ctx.skip(f"serve {b} {conc} readers {readers} rep {rep + 1}",
                             f"time budget: {ctx.left():.0f} s left in the step")
                    continue
                logs: list[str] = []
                t0 = time.perf_counter()
                s = serve(bundle, inputs, out, ServeOptions(backend=b, batch_size=p["serve_batch"], fmt=fmt,
                                                           concurrency=conc, resume=False, readers=readers),
                          progress=False, log=logs.append)
                est = time.perf_counter() - t0
                tp, ens = s.get("throughput", {}), s.get("ensemble", {})
                amp = sorted({str(r.get("amp")) for r in ens.get("runners", []) if r.get("amp") is not None})
                r = {"backend": b, "concurrency": conc, "readers": readers, "rep": rep + 1,
                     "rows": s["counts"]["rows_this_run"],
                     "catalog_rows": s["counts"]["catalog_rows"], **tp, "backend_used": s.get("backend"),
                     "device": s.get("device"), "backend_choice": s.get("backend_choice"),
                     "ensemble_concurrency": ens.get("concurrency"), "amp": ",".join(amp) or None,
                     "providers": sorted({x for r_ in ens.get("runners", []) for x in r_.get("providers", [])})}
                d["runs"].append(r)
                ctx.log(f"{b} {conc} readers {readers} rep {rep + 1}: {tp.get('end_to_end_img_s')} img/s end to end, "
                        f"{tp.get('inference_img_s')} inference")
                ctx.save()
        shutil.rmtree(out, ignore_errors=True)


def step_bench(ctx: Ctx) -> None:
    from lenstrt.bench.harness import REFERENCE, BenchSpec, ratios, run_bench

    p, d = ctx.plan, ctx.out["data"]
    prep = ctx.result("prepare")["data"]
    bundle, npy = prep["bundle"]["path"], prep["cutouts"]
    members = len(prep["checkpoints"])
    # bench's `torch` is fp32 on every device (the reference; registry bench_options amp=False); torch-amp is
    # fp16 autocast on CUDA, timed last and without the members rows (the torch call has them)
    backends = ["torch"] + _bundle_backends(ctx, "bench") + ["torch-amp"]
    d.update(batch_sizes=p["bench_batches"], modes=p["bench_modes"], warmup_ms=p["bench_warmup_ms"],
             duration_s=p["bench_duration_s"], members=members, bundle_kind=prep["bundle"]["kind"], data=npy,
             reference=REFERENCE, rows=[], calls=[], live=[])

    def progress(line: str) -> None:  # run_bench's line per finished row: kept even if the step is killed
        d["live"].append(f"{b} call: {line.strip()}")
        ctx.log(line.strip())
        ctx.save()

    def on_row(row: dict[str, Any]) -> None:  # saved at once (without agreement), replaced when the call returns
        first = not any(r.get("call") == b for r in d["rows"] if r.get("partial"))
        if first and b != "torch" and any(r.get("reference") for r in d["rows"]):
            return  # run_bench's first row is the reference configuration, already timed by the torch call
        d["rows"].append({**row, "partial": True, "call": b, "reference": first})
        ctx.save()

    per_cfg = float(p["bench_config_est_s"])
    for b in backends:
        modes = [m for m in p["bench_modes"] if b != "torch-amp" or m != "members"] or p["bench_modes"]
        combos = sum(members if m == "members" else 1 for m in modes if m != "concurrent" or members > 1)
        n_cfg = len(p["bench_batches"]) * combos + 1
        need = n_cfg * per_cfg
        if ctx.left() < need:
            ctx.skip(f"bench {b}", f"time budget: ~{need:.0f} s for {n_cfg} configurations, {ctx.left():.0f} s left")
            continue
        spec = BenchSpec(backends=(b,), batch_sizes=tuple(p["bench_batches"]), ensemble=tuple(modes),
                         warmup_ms=p["bench_warmup_ms"], duration_s=p["bench_duration_s"], n_agree=p["n_agree"],
                         # the stable bench may time up to max_windows windows per configuration: capped
                         # here so a noisy row cannot spend the step's budget (its spread is reported)
                         max_windows=int(p["bench_max_windows"]),
                         timeout_s=max(10.0, min(p["bench_config_timeout_s"], ctx.left() - 5)))
        t0 = time.perf_counter()
        rep = run_bench(bundle, spec, data=[npy], progress=progress, on_row=on_row)
        el = time.perf_counter() - t0
        rows = rep["rows"]
        d["rows"] = [r for r in d["rows"] if not (r.get("partial") and r.get("call") == b)]
        per_cfg = max(per_cfg * 0.5, el / max(1, len(rows)))
        have_ref = any(r.get("reference") for r in d["rows"])
        for i, r in enumerate(rows):
            if i == 0:  # run_bench's first row is the reference configuration (torch, separate, b64)
                r["reference"] = True
                if have_ref and b != "torch":
                    continue
            d["rows"].append(r)
        d["calls"].append({"backend": b, "configs": len(rows), "seconds": round(el, 1)})
        d.setdefault("bench_env", rep.get("env"))
        d["ratios"] = ratios([r for r in d["rows"]])
        ctx.save()


STEP_FUNCS = {"env": step_env, "pytest": step_pytest, "train": step_train, "prepare": step_prepare,
              "serve": step_serve, "bench": step_bench}


def run_step(name: str, work: Path, deadline: float) -> int:
    ctx = Ctx(name, work, deadline)
    if os.environ.get("GPU_CHECK_TEST_HANG") == name:  # tests/test_gpu_check.py: a step that hangs
        ctx.out["data"]["before_the_hang"] = 1.0
        ctx.save()
        time.sleep(3600)
    try:
        STEP_FUNCS[name](ctx)
    except Exception as exc:
        traceback.print_exc()
        ctx.out["error"] = f"{type(exc).__name__}: {exc}"[:600]
        ctx.save()
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:,.1f}") -> str:
    if v is None or v == "":
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _md_env(rep: dict[str, Any]) -> list[str]:
    e = rep["env"]
    mods = e.get("modules", {})
    gpus = e.get("gpus") or []
    g = "; ".join(f"{x['name']}, {x['memory_gib']} GiB, sm {x['compute_capability']}" for x in gpus) or "none"
    ok = [f"{m} {v.get('version')}" for m, v in mods.items() if v.get("ok")]
    bad = [m if str(v.get("error", "")).startswith("ModuleNotFoundError") else f"{m} ({v.get('error')})"
           for m, v in mods.items() if not v.get("ok")]
    rows = [["GPU", f"{g} (x{len(gpus)})" if gpus else g],
            ["driver / CUDA / cuDNN", f"{_f(e.get('driver'))} / torch built for CUDA {_f(e.get('torch_cuda'))} / "
                                      f"{_f(e.get('cudnn'), '{}')}"],
            ["torch", _f(e.get("torch"), "{}")], ["CPU", f"{e.get('cpu')} x{e.get('cpu_cores')}"],
            ["python", f"{e.get('python')} ({e.get('executable')})"], ["platform", _f(e.get("platform"), "{}")],
            ["repository", f"{e.get('repo')} @ {e.get('git_commit')}"],
            ["onnxruntime providers", ", ".join(e.get("ort_providers", [])) or "-"],
            ["importable", ", ".join(ok) or "-"], ["not importable", ", ".join(bad) or "-"]]
    return _table(["", ""], rows)


def _md_pytest(d: dict[str, Any]) -> list[str]:
    out = [f"`{d.get('command')}` ({_f(d.get('seconds'))} s, exit code {d.get('rc')}):", "",
           f"**{d.get('summary')}**"]
    if d.get("failures"):
        out += ["", "Failures and errors:", ""] + [f"- `{x}`" for x in d["failures"]]
    for pr in d.get("problems", []):
        out += ["", f"**{pr['kind']}: `{pr['test']}`**", "", "```", pr["message"], "", pr["traceback_tail"], "```"]
    if d.get("skip_reasons"):
        out += ["", "Skip reasons (pytest -ra):", ""] + [f"- `{x}`" for x in d["skip_reasons"][:10]]
    return out


def _md_train(d: dict[str, Any]) -> list[str]:
    runs = d.get("runs", [])
    base = {r["arch"]: r["images_per_s"] for r in runs if r.get("precision") == "fp32" and "images_per_s" in r}
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([r["arch"], r["precision"], "FAILED", "-", "-", "-", "-", r["error"][:80]])
            continue
        x = r["images_per_s"] / base[r["arch"]] if r["arch"] in base else None
        rows.append([r["arch"], r["precision"], _f(r["images_per_s"]), _f(x, "{:.2f}"), _f(r["step_ms"], "{:.1f}"),
                     f"{r['steps']} in {r['seconds']} s", _f(r.get("peak_mem_gib"), "{:.2f}"),
                     _f(r["final_loss"], "{:.4f}") + ("" if r.get("loss_finite") else " NOT FINITE")])
    shape = "x".join(str(s) for s in d.get("shape", []))
    tf = d.get("tf32") or {}
    return [f"Batch {d.get('batch')} of random {shape} cutouts held in {'pinned ' if d.get('device') == 'cuda' else ''}"
            f"host memory, on `{d.get('device')}`; each step is `Trainer.train_member`'s: `forward_loss` (copy to the "
            "device, augmentation, channels_last for ResNets, autocast forward, BCE), backward through the "
            "GradScaler, unscale + clip 1.0, AdamW step, scaler update. Timed after warm-up steps, synchronised. "
            f"fp32 as the trainer runs it (torch defaults: TF32 matmul {tf.get('matmul', '?')}, "
            f"cuDNN TF32 {tf.get('cudnn', '?')}).", ""
            ] + _table(["model", "precision", "img/s", "x fp32", "ms/step", "steps", "peak GPU GiB", "last loss"], rows)


def _md_serve(d: dict[str, Any]) -> list[str]:
    runs = d.get("runs", [])
    rows = [[r["backend"], r["concurrency"], r.get("readers", 1), r["rep"], _f(r.get("end_to_end_img_s")), _f(r.get("inference_img_s")),
             _f(r.get("pipeline_efficiency"), "{:.3f}"), _f(r.get("streaming_s"), "{:.2f}"), _f(r.get("amp"), "{}"),
             ",".join(x.replace("ExecutionProvider", "") for x in r.get("providers", [])) or "-"] for r in runs]
    out = [f"{d.get('members')} resnet18 members (random init), {d.get('rows'):,} cutouts ("
           f"{d.get('files', 1)} hard links to one .npy), batch "
           f"{d.get('batch')}, {d.get('format')} catalog, bundle: {d.get('bundle_kind')}; `serve()` end to end "
           "(reader thread, ensemble, writer thread), after one warm-up serve of a small file.", ""]
    out += _table(["backend", "concurrency", "readers", "rep", "end-to-end img/s", "inference img/s", "efficiency", "streaming s",
                   "amp", "providers"], rows)
    best: dict[tuple[str, str], dict[str, float]] = {}
    for r in runs:
        k = (r["backend"], r["concurrency"] if r.get("readers", 1) == 1 else f"readers {r['readers']}")
        for m in ("end_to_end_img_s", "inference_img_s"):
            if r.get(m):
                best.setdefault(k, {})[m] = max(best.get(k, {}).get(m, 0.0), r[m])
    lines = []
    for b in dict.fromkeys(r["backend"] for r in runs):
        s, q = best.get((b, "streams"), {}), best.get((b, "sequential"), {})
        if s.get("end_to_end_img_s") and q.get("end_to_end_img_s"):
            lines.append(f"- {b}: streams / sequential = {s['end_to_end_img_s'] / q['end_to_end_img_s']:.2f} end to end, "
                         f"{s.get('inference_img_s', 0) / max(q.get('inference_img_s', 0), 1e-9):.2f} inference "
                         "(best of the repetitions)")
        r2 = best.get((b, "readers 2"), {})
        if s.get("end_to_end_img_s") and r2.get("end_to_end_img_s"):
            lines.append(f"- {b}: 2 reader processes (pinned buffers) / 1 reader = "
                         f"{r2['end_to_end_img_s'] / s['end_to_end_img_s']:.2f} end to end (streams)")
    return out + ([""] + lines if lines else [])


def _md_bench(d: dict[str, Any]) -> list[str]:
    rows = []
    for r in d.get("rows", []):
        if not r.get("ok"):
            rows.append([r.get("label"), "FAILED", "-", "-", "-", "-", "-", "-", "-", str(r.get("error", ""))[:80]])
            continue
        runners = (r.get("ensemble_info") or {}).get("runners") or [{}]
        amp = ",".join(sorted({str(x.get("amp")) for x in runners if x.get("amp") is not None})) or "-"
        lat, gpu, a = r.get("latency", {}), r.get("gpu") or {}, r.get("agreement") or {}
        sp = r.get("gpu_time_split")
        split = "{h2d_share:.0%}/{compute_share:.0%}/{d2h_share:.0%}".format(**sp) if sp else "-"
        label = r["label"] + (" (reference)" if r.get("reference") else "") + (" *" if r.get("partial") else "")
        rows.append([label, amp, _f(r.get("images_per_s")),
                     _f(lat.get("p50_ms"), "{:.2f}"), _f(lat.get("p99_ms"), "{:.2f}"),
                     _f(gpu.get("gpu_mem_peak_gib"), "{:.2f}"), _f(gpu.get("gpu_util_mean_pct"), "{:.0f}"), split,
                     _f(a.get("max_abs_prob_diff"), "{:.1e}"), _f(r.get("load_s"), "{:.1f}")])
    out = [f"`run_bench` (each configuration in its own process), {d.get('members')} members, batch sizes "
           f"{d.get('batch_sizes')}, modes {d.get('modes')}, warm-up {d.get('warmup_ms')} ms, "
           f"{d.get('duration_s')} s timed per configuration, timed on `{Path(str(d.get('data'))).name}`; "
           f"bundle: {d.get('bundle_kind')}. max |Δp| is against the reference row (torch, separate, b64).", ""]
    out += _table(["configuration", "amp", "img/s", "p50 ms", "p99 ms", "GPU mem GiB", "GPU util %",
                   "H2D/compute/D2H", "max |Δp|", "load s"], rows)
    if any(r.get("partial") for r in d.get("rows", [])):
        out += ["", "\\* timed, but its run_bench call did not return before the step stopped: no agreement figure."]
    if d.get("ratios"):
        out += ["", "Speed-ups (run_bench's ratios: vs torch at the same mode and batch; concurrent vs separate):", ""]
        out += _table(["configuration", "vs", "x"], [[q["label"], q["vs"], _f(q["speedup"], "{:.2f}")]
                                                      for q in d["ratios"]])
    done = {r.get("label") for r in d.get("rows", [])}
    returned = {c.get("backend") for c in d.get("calls", [])}
    live = [ln for ln in d.get("live", []) if ln.split(" call:")[0] not in returned
            and not any(f" {lab} " in f"{ln} " for lab in done)]
    if live:
        out += ["", "Progress lines of the run_bench calls that did not return before the step stopped:", ""]
        out += [f"- `{ln}`" for ln in live]
    out += ["", "`torch` rows are fp32 (bench's reference, TF32 as torch defaults it); `torch-amp` rows autocast "
            "(fp16 on CUDA, bf16 on a CPU), as `lenstrt serve` does on CUDA by default."]
    return out


def _step_note(s: dict[str, Any]) -> str:
    parts = [s["error"]] if s.get("error") else []
    parts += s.get("notes", [])
    if s.get("why"):
        parts.append(s["why"])
    if s.get("skipped"):
        parts.append(f"{len(s['skipped'])} item(s) skipped, see Skipped")
    return "; ".join(parts)[:400].replace("\n", " ")


def render(rep: dict[str, Any]) -> str:
    env = rep.get("env", {})
    gpus = env.get("gpus") or []
    steps = rep["steps"]
    dry = rep["mode"] == "cpu-dry-run"
    title = "CPU dry run" if dry else (gpus[0]["name"] if gpus else "unknown GPU")
    counts: dict[str, int] = {}
    for s in steps.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    lines = [f"# lenstrt GPU check: {title} ({rep['created'][:10]})", "",
             f"`bash scripts/gpu_check.sh` ({rep['mode']}), started {rep['created']}, "
             + (f"finished in {rep['total_s']:.0f} s" if rep.get("total_s") is not None else "**still running or killed**")
             + f" (budget {rep['budget_s']:.0f} s). Steps: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + "."]
    if dry:
        lines += ["", "**Dry run on the CPU at tiny sizes: these figures test the flow, they measure nothing.**"]
    lines += ["", "## Environment", ""] + _md_env(rep)
    lines += ["", "## Steps", ""]
    lines += _table(["step", "status", "seconds", "budget s", "note"],
                    [[TITLES.get(k, k), s["status"], _f(s.get("seconds")), _f(s.get("budget_s"), "{:.0f}"),
                      _step_note(s)]
                     for k, s in steps.items() if k != "env"])
    for key, fn in (("pytest", _md_pytest), ("train", _md_train), ("serve", _md_serve), ("bench", _md_bench)):
        s = steps.get(key)
        lines += ["", f"## {TITLES[key]}", ""]
        if not s or s["status"] == "pending":
            lines.append("(not run yet)")
            continue
        if s["status"] == "skipped" and not s.get("data"):
            lines.append(f"Skipped: {s.get('why')}")
            continue
        try:
            lines += fn(s.get("data", {}))
        except Exception as exc:  # a report must come out whatever a step left behind
            lines.append(f"(could not render: {type(exc).__name__}: {exc})")
        if s.get("error"):
            lines += ["", f"Error: `{s['error'][:400]}`"]
            tail = s.get("log_tail") or []
            if tail:
                lines += ["", "```"] + tail + ["```"]
    lines += ["", "## Skipped", ""]
    sk = rep.get("skipped", [])
    lines += [f"- **{x['what']}**: {x['why']}" for x in sk] or ["(nothing)"]
    lines += ["", "How to read this: docs/gpu_check.md. Raw figures: the .json beside this file."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# the driver (parent process: no torch here; every step is a child it can kill)
# ---------------------------------------------------------------------------------------------------
class Driver:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.dry = a.cpu_dry_run
        plan = dict(DRY_PLAN if self.dry else GPU_PLAN)
        if a.budget_s:
            plan["budget_s"] = a.budget_s
        if a.members:
            plan["members"] = a.members
        plan["caps"] = dict(plan["caps"])
        for c in a.cap or []:
            k, _, v = c.partition("=")
            if k not in plan["caps"] or not v:
                raise SystemExit(f"--cap {c}: expected STEP=SECONDS with STEP one of {', '.join(plan['caps'])}")
            plan["caps"][k] = float(v)
            plan["min_s"] = {**plan["min_s"], k: min(plan["min_s"].get(k, 0), float(v))}
        plan.update(dry_run=self.dry, export=a.export)
        self.plan = plan
        self.work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="lenstrt-gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "plan.json").write_text(json.dumps(plan, indent=1))
        self.t0 = time.monotonic()
        self.deadline = self.t0 + plan["budget_s"]
        self.proc: subprocess.Popen | None = None
        self.rep: dict[str, Any] = {"schema": SCHEMA, "created": _now(), "mode": "cpu-dry-run" if self.dry else "gpu",
                                    "budget_s": plan["budget_s"], "plan": plan, "env": {}, "total_s": None,
                                    "steps": {}, "skipped": []}
        self.md_path: Path | None = None

    def log(self, msg: str) -> None:
        print(f"gpu-check [{time.monotonic() - self.t0:5.0f} s] {msg}", flush=True)

    # -- children ---------------------------------------------------------------------------------
    def _kill(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def child(self, name: str, timeout: float) -> dict[str, Any]:
        """Runs one step in its own process group; returns its status record (data kept on a timeout)."""
        res_path, log_path = self.work / f"{name}.json", self.work / f"{name}.log"
        res_path.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(self.work),
               "--deadline", f"{time.time() + timeout - 3:.1f}"]
        rec: dict[str, Any] = {"status": "running", "budget_s": round(timeout), "started": _now()}
        self.rep["steps"][name] = rec
        self.write()
        t0 = time.monotonic()
        seen, pos = 0.0, 0
        with open(log_path, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT, start_new_session=True)
            rc: int | None = None
            while True:
                try:
                    rc = self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    rc = None
                pos = self._echo(log_path, pos)
                if rc is not None:
                    break
                if time.monotonic() - t0 > timeout:
                    self._kill()
                    break
                m = res_path.stat().st_mtime if res_path.exists() else 0.0
                if m != seen:  # the step saved a figure: the report gets it now
                    seen = m
                    self._merge(name, rec)
                    self.write()
        self.proc = None
        pos = self._echo(log_path, pos)
        rec["seconds"] = round(time.monotonic() - t0, 1)
        self._merge(name, rec)
        if rc is None:
            rec["status"] = "timed out"
            rec["error"] = f"killed after {timeout:.0f} s (its own budget); figures saved before that are kept"
        elif rc != 0:
            rec["status"] = "failed"
            rec.setdefault("error", f"exit code {rc}")
        else:
            rec["status"] = "ok (some skipped)" if rec.get("skipped") else "ok"
        if rc != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:] if log_path.exists() else []
            rec["log_tail"] = [ln[:300] for ln in tail]
        return rec

    def _echo(self, log_path: Path, pos: int) -> int:
        if self.a.quiet or not log_path.exists():
            return pos
        with open(log_path, "rb") as fh:
            fh.seek(pos)
            chunk = fh.read()
        if chunk:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        return pos + len(chunk)

    def _merge(self, name: str, rec: dict[str, Any]) -> None:
        p = self.work / f"{name}.json"
        try:
            got = json.loads(p.read_text())
        except (OSError, ValueError):
            return
        rec["data"] = got.get("data", {})
        rec["skipped"] = got.get("skipped", [])
        rec["notes"] = got.get("notes", [])
        if got.get("error"):
            rec["error"] = got["error"]

    # -- report -------------------------------------------------------------------------------------
    def skipped_list(self) -> list[dict[str, str]]:
        out = []
        for name, s in self.rep["steps"].items():
            if s["status"] == "skipped":
                out.append({"what": TITLES.get(name, name), "why": s.get("why", "")})
            out += [{"what": x["what"], "why": x["why"]} for x in s.get("skipped", [])]
        return out

    def write(self) -> None:
        if self.md_path is None:
            return
        self.rep["skipped"] = self.skipped_list()
        _atomic_write(self.md_path.with_suffix(".json"), json.dumps(self.rep, indent=1, default=str))
        _atomic_write(self.md_path, render(self.rep))

    def budget(self, name: str, later: list[str]) -> float:
        reserve = sum(self.plan["min_s"].get(k, 0) for k in later)
        left = self.deadline - time.monotonic() - reserve
        return min(float(self.plan["caps"][name]), left)

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> int:
        self.log(f"work directory {self.work}")
        env = self.child("env", min(self.plan["caps"]["env"], self.deadline - time.monotonic()))
        self.rep["env"] = e = env.get("data", {})
        mods = e.get("modules", {})
        if mods and not mods.get("torch", {}).get("ok"):
            print(f"torch is not importable with {sys.executable} ({mods.get('torch', {}).get('error')}): nothing to check")
            return 0
        if not self.dry and e.get("cuda_available") is False:
            print(NO_GPU)
            return 0
        gpus = e.get("gpus") or []
        name = "cpu-dry-run" if self.dry else _slug(gpus[0]["name"] if gpus else "unknown")
        out_dir = Path(self.a.out_dir) if self.a.out_dir else (
            Path(tempfile.gettempdir()) / "lenstrt-gpu-check-dry-run" if self.dry else ROOT / "benchmarks" / "results")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.md_path = out_dir / f"{datetime.now().strftime('%Y-%m-%d')}-gpu-{name}.md"
        if env["status"] != "ok":
            self.rep["steps"]["env"] = env
        else:
            self.rep["steps"].pop("env", None)
        only = set(self.a.steps.split(",")) if self.a.steps else set(STEPS)
        for s in STEPS:
            self.rep["steps"][s] = {"status": "pending"}
        self.write()
        self.log(f"report: {self.md_path}")
        for i, s in enumerate(STEPS):
            rec = self.rep["steps"][s]
            missing = [m for m in NEEDS[s] if mods and not mods.get(m, {}).get("ok")]
            dep = [d for d in (("prepare",) if s in ("serve", "bench") else ())
                   if not self.rep["steps"][d]["status"].startswith("ok")]
            if s not in only:
                rec.update(status="skipped", why=f"not in --steps {self.a.steps}")
            elif missing:
                why = "; ".join(f"{m} not importable" + (f" ({WHY_NEEDED[m]})" if m in WHY_NEEDED else "")
                                for m in missing)
                if s == "serve":
                    why += "; the bench rows `separate` vs `concurrent` still compare sequential with streams"
                rec.update(status="skipped", why=why)
            elif dep:
                rec.update(status="skipped", why=f"needs the {dep[0]} step, which {self.rep['steps'][dep[0]]['status']}")
            else:
                t = self.budget(s, [x for x in STEPS[i + 1:] if x in only])
                if t < self.plan["min_s"][s]:
                    rec.update(status="skipped", why=f"time budget: {max(t, 0):.0f} s left for it")
                else:
                    self.log(f"step {s} (budget {t:.0f} s)")
                    self.rep["steps"][s] = rec = self.child(s, t)
                    self.log(f"step {s}: {rec['status']} in {rec['seconds']} s")
            if rec["status"] == "skipped":
                self.log(f"step {s}: skipped: {rec['why']}")
            self.write()
        self.rep["total_s"] = round(time.monotonic() - self.t0, 1)
        self.write()
        self.log(f"done in {self.rep['total_s']:.0f} s; report: {self.md_path} (+ .json)")
        if not self.a.keep_work and not self.a.work:
            import shutil

            shutil.rmtree(self.work, ignore_errors=True)
        return 0

    def interrupted(self, signum: int) -> None:
        self._kill()
        for s in self.rep["steps"].values():
            if s["status"] in ("running", "pending"):
                s["status"] = "interrupted" if s["status"] == "running" else "not run"
                s["error"] = f"the check was stopped ({signal.Signals(signum).name})"
        self.write()
        if not self.a.keep_work and not self.a.work:
            import shutil

            shutil.rmtree(self.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="every step on the CPU at tiny sizes (tests the flow)")
    ap.add_argument("--out-dir", help="where the report goes (default benchmarks/results; dry run: a temp dir)")
    ap.add_argument("--budget-s", type=float, help="total time budget in seconds (default 450 on a GPU)")
    ap.add_argument("--members", type=int, help="ensemble members for serve and bench (default 3; dry run 2)")
    ap.add_argument("--export", choices=("auto", "always", "never"), default="auto",
                    help="ONNX bundle: auto = only when onnxruntime-gpu or TensorRT would use it")
    ap.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)} (serve and bench need prepare)")
    ap.add_argument("--cap", action="append", metavar="STEP=SECONDS",
                    help="override one step's time cap (repeatable), e.g. --cap bench=300")
    ap.add_argument("--work", help="work directory, kept (default: a new temp dir, removed at the end)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work directory (step logs, bundle, data)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the steps' output")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.step:
        return run_step(a.step, Path(a.work), a.deadline or time.time() + 600)
    d = Driver(a)

    def on_signal(signum, _frame):
        d.interrupted(signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return d.run()


if __name__ == "__main__":
    sys.exit(main())
