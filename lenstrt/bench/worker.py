"""One benchmark configuration, run in its own process: python -m lenstrt.bench.worker CONFIG.json.

Separate processes because PyTorch's and ONNX Runtime's thread pools fight when they share one, and
because a backend that crashes must become a failed row, not a dead report.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

BACKENDS = {
    # "torch" is the fp32 reference on every device (the Runner alone would autocast fp16 on CUDA)
    "torch": ("torch", None, {"amp": False}), "torch-amp": ("torch", None, {"amp": True}),
    "torch-compile": ("torch", None, {"compile": True, "amp": False}),
    "ort": ("ort", "cpu", {}), "ort-cuda": ("ort", "cuda", {}), "ort-trt": ("ort", "trt", {}), "trt": ("trt", "cuda", {}),
    "openvino": ("openvino", "cpu", {}),
}


def run(cfg: dict) -> dict:
    import torch

    from lenstrt.bench.monitor import GpuMonitor
    from lenstrt.bench.stats import latency_stats
    from lenstrt.bundle import Bundle
    from lenstrt.runtime.select import build_ensemble

    backend, device, extra = BACKENDS[cfg["backend"]]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = cfg["ensemble"]
    gpu = device in ("cuda", "trt")
    concurrency = {"separate": "sequential", "concurrent": "streams" if gpu else "threads"}.get(mode, "sequential")
    if mode == "concurrent" and backend == "torch" and not gpu:
        concurrency = "threads"
    bundle = Bundle(cfg["bundle"])
    only = [cfg["member"]] if cfg.get("member") else None
    cutouts = np.load(cfg["cutouts_npy"])  # timed on, and scored for agreement
    bs = cfg["batch_size"]
    reps = -(-bs // len(cutouts))
    x = np.ascontiguousarray(np.concatenate([cutouts] * reps)[:bs])
    t_load = time.perf_counter()
    precision = cfg.get("precision") or "auto"
    if backend == "torch" and precision != "auto":
        extra = {k: v for k, v in extra.items() if k != "amp"}  # --precision decides torch's autocast
    ens = build_ensemble(bundle, backend, device, fused=mode == "fused", concurrency=concurrency, only=only,
                         precision=precision, **extra)
    with ens, GpuMonitor("cuda" if gpu else device) as mon:
        load_s = time.perf_counter() - t_load
        timed = [r for r in ens.runners if backend == "torch" and gpu and hasattr(r, "timing")]
        t_end = time.perf_counter() + cfg["warmup_ms"] / 1e3
        while True:  # warm-up: at least one call (compilation, allocator, caches)
            ens.infer(x)
            if time.perf_counter() >= t_end:
                break
        for r in timed:
            r.timing = {}
        lat = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < cfg["duration_s"]:
            t = time.perf_counter()
            ens.infer(x)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        split = None
        if timed:
            tot = {k: sum(r.timing.get(k, 0.0) for r in timed) for k in ("h2d_ms", "compute_ms", "d2h_ms")}
            s = sum(tot.values()) or 1.0
            split = {k.replace("_ms", "_share"): v / s for k, v in tot.items()}
            for r in timed:
                r.timing = None
        scores = np.concatenate([ens.infer(cutouts[i:i + 64]).score for i in range(0, len(cutouts), 64)])
        np.save(cfg["scores_out"], scores)
        info = ens.info
    return {"ok": True, "images_per_s": len(lat) * bs / elapsed, "latency": latency_stats(lat), "load_s": load_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu": mon.summary(),
            "gpu_time_split": split,
            "device": device, "precision": info["runners"][0].get("precision"), "concurrency": concurrency if mode != "fused" else "fused graph", "ensemble_info": info,
            "providers": sorted({p for r in info["runners"] for p in r.get("providers", [])})}


def main() -> None:
    cfg = json.loads(open(sys.argv[1]).read())
    res = run(cfg)
    with open(cfg["out"], "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main()
