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
from lenstrt.runtime.base import Runner, as_numpy

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


class OrtRunner(Runner):
    """Runner over one ONNX graph. `device`: cpu | cuda | trt (ORT's TensorRT execution provider)."""

    backend = "ort"

    def __init__(self, name: str, path: str | Path, device: str = "cpu", opt_level: str = "all",
                 threads: int | None = None, trt_cache_dir: str | None = None):
        super().__init__(name)
        self.path, self.device, self.opt_level, self.threads = Path(path), device, opt_level, threads
        self.trt_cache_dir = trt_cache_dir
        self.session = None

    def activate(self) -> None:
        opts: dict[str, dict[str, Any]] = {}
        if self.device == "trt":
            cache = self.trt_cache_dir or str(self.path.parent / "ort_trt_cache")
            opts["TensorrtExecutionProvider"] = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                 "trt_engine_cache_path": cache, "trt_timing_cache_enable": True}
        self.session = make_session(self.path, self.device, self.opt_level, self.threads, opts)
        got = self.session.get_providers()
        wanted = PROVIDERS[self.device][0]
        if wanted not in got:
            raise BackendError(f"{self.path.name}: ONNX Runtime could not use {wanted} (got {got}); install "
                               "onnxruntime-gpu (it replaces onnxruntime) and check CUDA, or use --backend ort on CPU")
        i = self.session.get_inputs()[0]
        self._spec = {"name": i.name, "shape": [-1 if not isinstance(d, int) else d for d in i.shape],
                      "dtype": "float32"}
        self.outputs = [o.name for o in self.session.get_outputs()]
        import onnxruntime as ort

        self.info.update(device=self.device, providers=got, opt_level=self.opt_level,
                         threads=self.threads, onnxruntime=ort.__version__)
        super().activate()

    @property
    def input_spec(self) -> dict[str, Any]:
        return self._spec

    def infer(self, images):
        x = as_numpy(images)
        if self.device == "cpu":
            outs = self.session.run(None, {self._spec["name"]: x})
        else:
            outs = self._run_bound(x)
        return outs[0][:, 0] if len(outs) == 1 else tuple(o[:, 0] if o.shape[1] == 1 else o for o in outs)

    def _run_bound(self, x: np.ndarray):
        """IO binding on CUDA: the input is copied once and outputs stay on the device until fetched."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._spec["name"], x)
        for name in self.outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def deactivate(self) -> None:
        self.session = None
        super().deactivate()
