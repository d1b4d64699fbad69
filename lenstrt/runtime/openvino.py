"""OpenVINO backend (`--backend openvino`, `pip install 'lenstrt[openvino]'`): the bundle's ONNX graphs
compiled for the CPU by OpenVINO's own runtime.

Precision: fp32 (INFERENCE_PRECISION_HINT f32, so a bf16 CPU does not silently compute in bf16), bf16
(the hint bf16 over the fp32 graph: CPUs with native bf16 only) or int8 (the bundle's QDQ graph, folded
into OpenVINO's INT8 kernels; its float parts, the preprocessing included, stay f32).
Throughput: the THROUGHPUT hint gives one stream per core or two here; a batch is split into one slice
per infer request and the slices run at once, so every stream works on every call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.errors import BackendError
from lenstrt.runtime.base import Runner, as_numpy, order_outputs

HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}


def compile_config(precision: str, threads: int | None, hint: str = "THROUGHPUT") -> dict[str, str]:
    """The CPU plugin's properties for a precision (as strings: OpenVINO takes them so in every version)."""
    if precision not in HINTS:
        raise BackendError(f"--precision {precision}: the openvino backend runs fp32, bf16 or int8")
    cfg = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": HINTS[precision]}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = str(threads)
    return cfg


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, name: str, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 output_names: list[str] | None = None, sha256: str | None = None, hint: str | None = None,
                 input_shape: tuple[int, ...] | None = None):
        super().__init__(name, input_shape)
        self.path, self.precision, self.threads = Path(path), precision, threads or os.cpu_count() or 1
        self.output_names, self.sha256 = output_names, sha256
        self.hint = hint or os.environ.get("LENSTRT_OPENVINO_HINT", "THROUGHPUT")
        self.compiled: Any = None
        self.requests: list[Any] = []

    def _activate(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError("--backend openvino: OpenVINO is not installed; pip install 'lenstrt[openvino]'") \
                from exc
        from lenstrt.bundle import read_verified
        from lenstrt.runtime.select import cpu_has_bf16

        if self.precision == "bf16" and not cpu_has_bf16():
            raise BackendError("--precision bf16 with openvino needs a CPU with native bf16 (AVX512_BF16 or AMX)")
        read_verified(self.path, self.sha256)  # refuse a graph whose bytes differ from the manifest's
        core = ov.Core()
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", compile_config(self.precision, self.threads,
                                                                                     self.hint))
        except Exception as exc:
            raise BackendError(f"{self.path.name}: OpenVINO cannot compile it ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        n = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests = [self.compiled.create_infer_request() for _ in range(max(1, n))]
        self.outputs = [o.get_any_name() for o in self.compiled.outputs]
        self.output_names = self.output_names or self.outputs
        inp = self.compiled.inputs[0]
        self._spec = {"name": inp.get_any_name(), "shape": [-1, *[d.get_length() for d in list(inp.get_partial_shape())[1:]]],
                      "dtype": "float32"}
        self.info.update(device="cpu", openvino=ov.__version__, precision=self.precision, hint=self.hint,
                         streams=int(self.compiled.get_property("NUM_STREAMS")), infer_requests=len(self.requests),
                         threads=self.threads, path=self.path.name)

    def _infer(self, images):
        x = as_numpy(images)
        k = min(len(self.requests), len(x))
        chunks = np.array_split(x, k) if k > 1 else [x]
        reqs = self.requests[:len(chunks)]
        for r, c in zip(reqs, chunks):
            r.start_async({0: np.ascontiguousarray(c)})
        for r in reqs:
            r.wait()
        named = {name: np.concatenate([np.array(r.get_tensor(name).data, dtype=np.float32) for r in reqs])
                 for name in self.output_names}
        return order_outputs(named, self.output_names, self.path.name)

    def _deactivate(self) -> None:
        self.requests, self.compiled = [], None
