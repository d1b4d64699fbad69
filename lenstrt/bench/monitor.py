"""GPU memory and utilisation sampled with nvidia-ml-py while a configuration runs (no-op without a GPU)."""

from __future__ import annotations

import threading


class GpuMonitor:
    def __init__(self, index: int = 0, interval_s: float = 0.05):
        self.index, self.interval = index, interval_s
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = pynvml
        except Exception:
            return self
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nv = self._nvml
        while not self._stop.wait(self.interval):
            mem = nv.nvmlDeviceGetMemoryInfo(self._handle).used
            util = nv.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.samples.append((mem, util))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._nvml:
            self._nvml.nvmlShutdown()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        return {"gpu_mem_peak_gib": max(m for m, _ in self.samples) / 2**30,
                "gpu_util_mean_pct": sum(u for _, u in self.samples) / len(self.samples)}
