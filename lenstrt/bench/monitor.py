"""GPU memory and utilisation sampled with nvidia-ml-py while a configuration runs (no-op without a GPU).

NVML numbers GPUs its own way (PCI order, all of them), CUDA its way (fastest first by default, and only
those in CUDA_VISIBLE_DEVICES): NVML index 0 need not be the GPU the run uses. The NVML handle is found
from the torch device's UUID (or PCI bus id), never by index. NVML errors (MIG, permissions, a driver
without the query) degrade to "no GPU metrics" with the reason; they never kill a run or a sampler thread.
"""

from __future__ import annotations

import threading
from typing import Any


def torch_device_ids(device: str) -> dict[str, Any]:
    """UUID and PCI bus id of a torch CUDA device ("cuda", "cuda:1")."""
    import torch

    index = torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    p = torch.cuda.get_device_properties(index)
    ids: dict[str, Any] = {"index": index, "name": p.name}
    uuid = str(getattr(p, "uuid", "") or "")
    if uuid:
        ids["uuid"] = uuid
    if hasattr(p, "pci_bus_id"):
        ids["pci_bus_id"] = f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
    return ids


def nvml_handle(nv: Any, ids: dict[str, Any]) -> Any:
    """The NVML handle of the GPU torch calls `ids`: by UUID (NVML writes it `GPU-<uuid>`, or `MIG-...`),
    else by PCI bus id. Raises LookupError naming what was tried."""
    tried = []
    uuid = ids.get("uuid")
    if uuid:
        for cand in ([uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"]):
            tried.append(cand)
            try:
                return nv.nvmlDeviceGetHandleByUUID(cand)
            except Exception:
                pass
    bus = ids.get("pci_bus_id")
    if bus:
        tried.append(bus)
        try:
            return nv.nvmlDeviceGetHandleByPciBusId(bus)
        except Exception:
            pass
    raise LookupError(f"NVML has no GPU matching {', '.join(tried) or 'nothing (no UUID or PCI id from torch)'}")


class GpuMonitor:
    def __init__(self, device: str = "cuda", interval_s: float = 0.05, nvml: Any = None,
                 ids: dict[str, Any] | None = None):
        """`nvml` and `ids` replace pynvml and the torch lookup (tests)."""
        self.device, self.interval = device, interval_s
        self.samples: list[tuple[int, int | None]] = []
        self._util_ok = True
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml, self._ids, self._inited = nvml, ids, False

    def __enter__(self):
        if not self.device.startswith("cuda"):
            return self
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            ids = self._ids if self._ids is not None else torch_device_ids(self.device)
            self._nvml.nvmlInit()
            self._inited = True
            self._handle = nvml_handle(self._nvml, ids)
            self.gpu = ids
        except Exception as exc:
            self.error = f"no GPU metrics: {type(exc).__name__}: {exc}"
            self._shutdown()
            return self
        self._thread = threading.Thread(target=self._run, daemon=True, name="lenstrt-nvml")
        self._thread.start()
        return self

    def _run(self) -> None:
        nv = self._nvml
        try:
            while not self._stop.wait(self.interval):
                mem = nv.nvmlDeviceGetMemoryInfo(self._handle).used
                util = None
                if self._util_ok:
                    try:
                        util = nv.nvmlDeviceGetUtilizationRates(self._handle).gpu
                    except Exception as exc:  # MIG instances refuse utilisation; memory still counts
                        self._util_ok = False
                        self.error = f"no GPU utilisation: {type(exc).__name__}: {exc}"
                self.samples.append((mem, util))
        except Exception as exc:  # a driver that stops answering: keep what was sampled
            self.error = f"GPU metrics stopped: {type(exc).__name__}: {exc}"

    def _shutdown(self) -> None:
        if self._inited:
            self._inited = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._shutdown()

    def summary(self) -> dict | None:
        if not self.samples:
            return {"error": self.error} if self.error else None
        utils = [u for _, u in self.samples if u is not None]
        out = {"gpu_mem_peak_gib": max(m for m, _ in self.samples) / 2**30,
               "gpu_util_mean_pct": sum(utils) / len(utils) if utils else None}
        if self.error:
            out["error"] = self.error
        return out
