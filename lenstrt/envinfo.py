"""What `lenstrt info` reports, and the environment header of bench and serve summaries."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from functools import lru_cache
from typing import Any


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install must not break `info`
        return None if isinstance(exc, ImportError) else f"import failed: {exc}"
    return getattr(mod, "__version__", "unknown")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)  # host(), info and serve's INT8 check all ask; the CPU does not change under us
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return frozenset(next((ln for ln in fh if ln.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX: bf16 compute at about twice fp32 (torch autocast, OpenVINO's precision hint)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """VNNI (AVX-512 or AVX) or AMX: 8-bit products summed in int32. Without it ONNX Runtime multiplies uint8 by
    int8 with VPMADDUBSW, whose int16 pair sums saturate: an INT8 graph that holds elsewhere can fail its
    gate (measured on an AVX2 EPYC, docs/export.md)."""
    return bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def host(device: str) -> dict[str, Any]:
    """What a time budget bought: a run's step count depends on the machine (the same 20 CPU minutes were
    ~4,350 resnet18_half steps on an AVX-512 host and 1,878 on an AVX2 one), so checkpoints and runs record
    where they trained. cpu_capability is the vector ISA PyTorch's kernels use (AVX2, AVX512, ...);
    cpu_int8_dot whether INT8 graphs validated here hold on CPUs without VNNI (cpu_has_int8_dot)."""
    out: dict[str, Any] = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "cpu_int8_dot": cpu_has_int8_dot()}
    try:
        import torch
    except Exception:  # `lenstrt info` on a broken install still names the CPU
        return out
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def gpus() -> list[dict[str, Any]] | str:
    """GPUs through NVML (nvidia-ml-py); a string saying why when there are none."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return f"no NVIDIA driver ({type(exc).__name__})"
    try:
        out = []
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "name": pynvml.nvmlDeviceGetName(h),
                        "memory_gib": round(mem.total / 2**30, 1), "driver": driver})
        return out
    finally:
        pynvml.nvmlShutdown()


def tensorrt_status() -> str:
    from lenstrt.runtime.trt import probe

    version, why = probe()
    return version or why


def collect() -> dict[str, Any]:
    info: dict[str, Any] = {
        "lenstrt": _version("lenstrt"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **host("cpu"),
    }
    torch_v = _version("torch")
    info["torch"] = torch_v
    if torch_v and not torch_v.startswith("import failed"):
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
    info["torchvision"] = _version("torchvision")
    info["onnx"] = _version("onnx")
    ort_v = _version("onnxruntime")
    info["onnxruntime"] = ort_v
    if ort_v and not ort_v.startswith("import failed"):
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    info["openvino"] = _version("openvino") or "not installed (pip install 'lenstrt[openvino]')"
    info["cpu_native_bf16"] = cpu_has_native_bf16()  # bf16 precision on CPUs (torch autocast, OpenVINO hint)
    info["tensorrt"] = tensorrt_status()
    info["gpus"] = gpus()
    return info
