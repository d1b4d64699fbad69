"""The only module that builds TensorRT engines. Written against the TensorRT 10/11 Python API and
type-checked in CI with mypy against tensorrt-stubs (10.13); no machine of ours has TensorRT.

Precision: TensorRT 11 removed BuilderFlag.FP16, and 10.12+ deprecates it; there the engine is built
from the mixed-precision fp16 ONNX graph as a strongly typed network, so it runs in the graph's
dtypes. Older 10.x builds the fp32 graph with the FP16 flag (weak typing picks fp16 kernels).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lenstrt.errors import ExportError


@dataclass(frozen=True)
class BuildOptions:
    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 1024
    workspace_gib: float = 4.0
    fp16: bool = True
    timing_cache: str | None = None   # default: ~/.cache/lenstrt/, one file per TensorRT version and GPU


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def uses_strong_typing(version: str) -> bool:
    """True where FP16 must come from the graph: TensorRT >= 10.12 (flag deprecated) and 11 (flag gone)."""
    major, minor = parse_version(version)
    return major >= 11 or (major == 10 and minor >= 12)


def source_graph(version: str, fp16: bool) -> str:
    """Which ONNX graph to build from: 'fp16' (strongly typed) or 'fp32' (with the FP16 flag, or fp32)."""
    return "fp16" if fp16 and uses_strong_typing(version) else "fp32"


def status() -> tuple[bool, str]:
    """(can build, why not). Needs the tensorrt module and a CUDA GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install 'lenstrt[trt]' on a machine with an NVIDIA GPU)"
    if not hasattr(trt, "Builder"):
        return False, "the tensorrt module here is a stub without the runtime"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible"
    except ImportError:
        return False, "torch is missing"
    return True, f"TensorRT {trt.__version__}"


def gpu_fingerprint() -> dict[str, str]:
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt_version": str(trt.__version__), "gpu_name": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}"}


def _cache_path(opts: BuildOptions, fp: dict[str, str]) -> Path:
    if opts.timing_cache:
        return Path(opts.timing_cache)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lenstrt"
    tag = f"{fp['tensorrt_version']}_sm{fp['compute_capability'].replace('.', '')}"
    return base / f"trt_timing_{tag}.cache"


def build_engine(onnx_path: str | Path, plan_path: str | Path, input_name: str, chw: tuple[int, int, int],
                 opts: BuildOptions) -> dict[str, Any]:
    """Builds and writes a serialized engine; returns the manifest entry (fingerprint, options)."""
    import time

    import tensorrt as trt

    t0 = time.perf_counter()
    version = str(trt.__version__)
    strong = uses_strong_typing(version)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strong and parse_version(version)[0] == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    if opts.fp16 and not strong:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    c, h, w = chw
    profile.set_shape(input_name, trt.Dims([opts.min_batch, c, h, w]), trt.Dims([opts.opt_batch, c, h, w]),
                      trt.Dims([opts.max_batch, c, h, w]))
    config.add_optimization_profile(profile)
    fp = gpu_fingerprint()
    cache_file = _cache_path(opts, fp)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    plan_path = Path(plan_path)
    plan_path.write_bytes(bytes(memoryview(plan)))
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return {**fp, "build": {**asdict(opts), "strongly_typed": strong, "fp16_flag": opts.fp16 and not strong,
                            "timing_cache": str(cache_file)}, "build_time_s": round(time.perf_counter() - t0, 2)}
