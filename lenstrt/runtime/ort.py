"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

ORT silently falls back to the CPU when a GPU provider cannot load, so the Runner records the
providers the session really got. Thread pools: intra-op threads = the cores we were given, and
spinning off, so ORT does not busy-wait against torch or other members sharing the cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.errors import BackendError

OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def make_session(path: str | Path, device: str = "cpu", opt_level: str = "all", threads: int | None = None,
                 provider_options: dict[str, dict[str, Any]] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    wanted = PROVIDERS[device]
    avail = set(ort.get_available_providers())
    providers = [p for p in wanted if p in avail]
    opts = [dict((provider_options or {}).get(p, {})) for p in providers]
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers, provider_options=opts)
    except Exception as exc:
        raise BackendError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def run_session(session, images: np.ndarray) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})
