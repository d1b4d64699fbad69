"""One benchmark configuration, in its own process: python -m lenstrt.bench.worker CONFIG.json.

Separate processes because PyTorch's and ONNX Runtime's thread pools fight when they share one, and
because a backend that crashes must become a failed row, not a dead report.

The worker loads the model, warms it up, then answers commands on stdin, one per line, so the harness
can interleave configurations (a window of one, then a window of the next: machine noise falls on all
alike) and decide when their figures are stable:
  `window`  time one window (at least `window_s` seconds and `min_calls` calls); reply {calls, seconds, lat}
  `finish`  score the agreement set, write the result to cfg["out"], exit.
Replies are one JSON line each, after the marker `REPLY` (libraries may print to stdout too).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np

REPLY = "@@lenstrt-bench "


class Config:
    """A configuration loaded and warmed up, ready for timing windows."""

    def __init__(self, cfg: dict):
        import torch

        from lenstrt.bundle import Bundle
        from lenstrt.runtime.registry import CHOICES, on_gpu
        from lenstrt.runtime.select import build_ensemble

        self.cfg = cfg
        choice = CHOICES[cfg["backend"]]
        device = choice.bench_device or choice.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.backend, self.device = choice.backend, device
        extra: dict[str, Any] = {**choice.bench_options, **choice.options}
        mode = cfg["ensemble"]
        self.gpu = on_gpu(device)
        concurrency = {"separate": "sequential", "concurrent": "streams" if self.gpu else "threads"}.get(mode, "sequential")
        self.concurrency = concurrency
        bundle = Bundle(cfg["bundle"])
        only = [cfg["member"]] if cfg.get("member") else None
        self.cutouts = np.load(cfg["cutouts_npy"])  # timed on, and scored for agreement
        bs = self.bs = cfg["batch_size"]
        reps = -(-bs // len(self.cutouts))
        self.x = np.ascontiguousarray(np.concatenate([self.cutouts] * reps)[:bs])
        precision = cfg.get("precision") or "auto"
        if choice.backend == "torch" and precision != "auto":
            extra.pop("amp", None)  # --precision decides torch's autocast
        t_load = time.perf_counter()
        self.ens = build_ensemble(bundle, choice.backend, device, fused=mode == "fused", concurrency=concurrency,
                                  only=only, precision=precision, **extra)
        self.ens.__enter__()
        self.load_s = time.perf_counter() - t_load
        self.timed = [r for r in self.ens.runners if choice.backend == "torch" and self.gpu and hasattr(r, "timing")]
        t_end = time.perf_counter() + cfg["warmup_ms"] / 1e3
        while True:  # warm-up: at least one call (compilation, allocator, caches)
            self.ens.infer(self.x)
            if time.perf_counter() >= t_end:
                break
        for r in self.timed:
            r.timing = {}

    def window(self, window_s: float, min_calls: int) -> dict[str, Any]:
        lat = []
        t0 = time.perf_counter()
        while len(lat) < min_calls or time.perf_counter() - t0 < window_s:
            t = time.perf_counter()
            self.ens.infer(self.x)
            lat.append(time.perf_counter() - t)
        return {"calls": len(lat), "seconds": time.perf_counter() - t0, "lat": lat}

    def finish(self) -> dict[str, Any]:
        split = None
        if self.timed:
            tot = {k: sum(r.timing.get(k, 0.0) for r in self.timed) for k in ("h2d_ms", "compute_ms", "d2h_ms")}
            s = sum(tot.values()) or 1.0
            split = {k.replace("_ms", "_share"): v / s for k, v in tot.items()}
            for r in self.timed:
                r.timing = None
        c = self.cutouts
        scores = np.concatenate([self.ens.infer(c[i:i + 64]).score for i in range(0, len(c), 64)])
        np.save(self.cfg["scores_out"], scores)
        info = self.ens.info
        summary = None
        if self.gpu:
            summary = getattr(self, "gpu_summary", None)
        self.ens.__exit__(None, None, None)
        return {"ok": True, "load_s": self.load_s,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu": summary,
                "gpu_time_split": split, "device": self.device, "precision": info["runners"][0].get("precision"),
                "concurrency": self.concurrency if self.cfg["ensemble"] != "fused" else "fused graph",
                "ensemble_info": info, "batch_size": self.bs,
                "providers": sorted({p for r in info["runners"] for p in r.get("providers", [])})}


def _reply(obj: dict) -> None:
    sys.stdout.write(REPLY + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    from lenstrt.bench.monitor import GpuMonitor

    cfg = json.loads(open(sys.argv[1]).read())
    conf = Config(cfg)
    with GpuMonitor("cuda" if conf.gpu else conf.device) as mon:
        _reply({"ready": True, "load_s": conf.load_s})
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "window":
                _reply(conf.window(float(cmd[1]), int(cmd[2])))
            elif cmd[0] == "finish":
                conf.gpu_summary = mon.summary()
                break
    res = conf.finish()
    with open(cfg["out"], "w") as fh:
        json.dump(res, fh)
    _reply({"done": True})


if __name__ == "__main__":
    main()
