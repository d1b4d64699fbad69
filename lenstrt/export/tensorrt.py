"""The only module that builds TensorRT engines. Written against the TensorRT 10/11 Python API and
type-checked in CI with mypy against tensorrt-stubs (10.13); no machine of ours has TensorRT.

Precision: every engine is built strongly typed, on TensorRT 10.x and 11 alike, from the graph whose
dtypes it should run in: the mixed-precision fp16 ONNX graph (preprocessing, LayerNorm, Softmax and
reductions kept fp32) for FP16, the fp32 graph otherwise. TensorRT 11 removed BuilderFlag.FP16 and
10.12 deprecated it; on 10.0-10.11 it still exists, but weak typing would be free to run the
preprocessing of raw fluxes (~1e5, above fp16's 65504) in fp16, so it is never set.

INT8 is explicit quantization: the engine is built, strongly typed, from a symmetric INT8 QDQ graph of its
own (`export --int8`; the parser takes zero points of 0 and INT8 only, not the uint8 graph ONNX Runtime and
OpenVINO run, export/int8.py); the scales are in the graph, so there is no calibrator and no INT8 builder
flag (a strongly typed network refuses precision flags). `int8_problem` says where that cannot work.
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
    timing_cache: str | None = None   # default: ~/.cache/lenstrt/, one file per TensorRT version and GPU model


def parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def network_flags(version: str, strongly_typed_bit: int) -> int:
    """Creation flags: strongly typed on every TensorRT 10.x (the engine runs in the ONNX graph's dtypes,
    so the mixed-precision graph's fp32 preprocessing stays fp32; raw fluxes ~1e5 overflow fp16). On 11
    every network is strongly typed and the flag is not needed."""
    return 0 if parse_version(version)[0] >= 11 else 1 << strongly_typed_bit


def source_graph(fp16: bool) -> str:
    """Which ONNX graph an engine is built from: the mixed-precision one for an FP16 engine (TensorRT
    10.0-10.11's weakly typed FP16 flag is not used: nothing pins the preprocessing to fp32 there)."""
    return "fp16" if fp16 else "fp32"


# int8: the symmetric QDQ graph (artifact onnx_int8_trt), not the CPU runtimes' one (export/int8.py)
SOURCE_GRAPHS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-symmetric"}


def source_graph_for(precision: str) -> str:
    """The ONNX graph an engine of `precision` is built from (manifest artifact onnx / onnx_fp16 / onnx_int8_trt)."""
    if precision not in SOURCE_GRAPHS:
        raise ExportError(f"TensorRT engines are built fp32, fp16 or int8, not {precision!r}")
    return SOURCE_GRAPHS[precision]


def int8_problem(version: str, compute_capability: str) -> str | None:
    """Why an explicitly quantized (QDQ) INT8 engine cannot be built here, or None. Strongly typed networks
    with Q/DQ layers need TensorRT >= 10.0; INT8 kernels need compute capability >= 6.1, and without INT8
    tensor cores (sm < 7.5) they are no faster than FP16."""
    major, minor = parse_version(compute_capability)
    if parse_version(version)[0] < 10:
        return f"TensorRT {version}: strongly typed INT8 (QDQ) engines need TensorRT >= 10"
    if (major, minor) < (7, 5):
        return f"sm {compute_capability}: no INT8 tensor cores (need sm >= 7.5); use the fp16 engine"
    return None


MIN_VERSION = 10
TOPK_MAX = 3840  # TensorRT's TopK: K must be less than this (onnx-tensorrt operator table)


def topk_problem(image_size: int, frame: int) -> str | None:
    """Why the in-graph preprocessing cannot become a TensorRT engine, or None: its border median sorts the
    whole frame with one TopK (models/preprocess.py), 960 pixels for 64 px cutouts, too many from 244 px."""
    k = image_size ** 2 - max(image_size - 2 * frame, 0) ** 2
    if k >= TOPK_MAX:
        return (f"{image_size} px cutouts: the preprocessing's border median sorts {k} pixels with one TopK and "
                f"TensorRT takes fewer than {TOPK_MAX}; serve with ONNX Runtime (CUDA or CPU), or cut out at most "
                f"243 px")
    return None


def version_problem(version: str) -> str | None:
    """Why this TensorRT cannot build or run lenstrt's engines, or None: strongly typed networks and the
    BF16/INT64 types are TensorRT 10 API (8.6 has neither: the build would die on an AttributeError)."""
    if parse_version(version)[0] < MIN_VERSION:
        return (f"TensorRT {version} is too old: lenstrt builds strongly typed engines, which need TensorRT >= "
                f"{MIN_VERSION} (pip install 'lenstrt[trt]')")
    return None


def status() -> tuple[bool, str]:
    """(can build, why not). Needs the tensorrt module and a CUDA GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed (pip install 'lenstrt[trt]' on a machine with an NVIDIA GPU)"
    if not hasattr(trt, "Builder"):
        return False, "the tensorrt module here is a stub without the runtime"
    if problem := version_problem(str(trt.__version__)):
        return False, problem
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


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text).strip("-")


def cache_path(opts: BuildOptions, fp: dict[str, str]) -> Path:
    """Timing caches are keyed by TensorRT version, GPU model and compute capability: an H100 and an H200
    share sm 9.0 but not their kernels' timings."""
    if opts.timing_cache:
        return Path(opts.timing_cache)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lenstrt"
    tag = f"{fp['tensorrt_version']}_{_slug(fp['gpu_name'])}_sm{fp['compute_capability'].replace('.', '')}"
    return base / f"trt_timing_{tag}.cache"


def build_engine(onnx_path: str | Path, plan_path: str | Path, input_name: str, chw: tuple[int, int, int],
                 opts: BuildOptions, log=print) -> dict[str, Any]:
    """Builds and writes a serialized engine, strongly typed from `onnx_path`; returns the manifest entry
    (fingerprint, options). The caller validates it numerically (export/pipeline.py)."""
    import time

    import tensorrt as trt

    from lenstrt.io import atomic_path

    t0 = time.perf_counter()
    version = str(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(version, int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    c, h, w = chw
    profile.set_shape(input_name, trt.Dims([opts.min_batch, c, h, w]), trt.Dims([opts.opt_batch, c, h, w]),
                      trt.Dims([opts.max_batch, c, h, w]))
    config.add_optimization_profile(profile)
    fp = gpu_fingerprint()
    cache_file = cache_path(opts, fp)
    cache_state = "reused" if cache_file.is_file() else "new"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, False):
        # An unreadable or mismatched cache must cost time, not the build.
        log(f"TensorRT timing cache {cache_file} not usable; building without it and writing a fresh one")
        cache_state = "rejected"
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            raise ExportError("TensorRT could not create an empty timing cache (out of host memory?)")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    plan_path = Path(plan_path)
    plan_path.write_bytes(bytes(memoryview(plan)))
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_file) as tmp:  # two exports on one machine must not leave a torn cache
        Path(tmp).write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return {**fp, "build": {**asdict(opts), "strongly_typed": True, "timing_cache": str(cache_file),
                            "timing_cache_state": cache_state},
            "build_time_s": round(time.perf_counter() - t0, 2)}
