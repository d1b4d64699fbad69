"""The only module that runs TensorRT engines. Written against the TensorRT 10/11 Python API and
type-checked in CI with mypy against tensorrt-stubs; no machine of ours has TensorRT.

I/O lives in PyTorch-owned CUDA memory on a PyTorch-owned stream: addresses go to the execution
context with `set_tensor_address`, work is enqueued with `execute_async_v3(stream)`. No pycuda
context is created (pycuda's context fights PyTorch's primary context). One execution context and
one stream per member, so an ensemble's members overlap on the GPU. Optional CUDA graph capture
for one fixed batch size removes per-launch overhead for small models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.bundle import check_engine
from lenstrt.errors import BackendError
from lenstrt.runtime.base import Runner, as_numpy


class TrtRunner(Runner):
    backend = "trt"

    def __init__(self, name: str, plan: str | Path, engine: dict[str, Any], device: str = "cuda",
                 cuda_graph_batch: int | None = None, bundle_dir: str | Path = "BUNDLE"):
        super().__init__(name)
        self.plan, self.engine_entry, self.device = Path(plan), engine, device
        self.cuda_graph_batch, self.bundle_dir = cuda_graph_batch, bundle_dir
        self._graph: Any = None

    def activate(self) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BackendError(f"{self.plan.name}: TensorRT needs a CUDA GPU; use --backend ort or torch")
        major, minor = torch.cuda.get_device_capability()
        check_engine(self.engine_entry, str(trt.__version__), torch.cuda.get_device_name(), f"{major}.{minor}",
                     self.bundle_dir)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:
            raise BackendError(f"{self.plan}: TensorRT could not deserialize the engine; rebuild it with `lenstrt export`")
        self.engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{self.plan}: could not create an execution context (GPU memory?)")
        self.context = context
        self.stream = torch.cuda.Stream(device=self.device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise BackendError(f"{self.plan}: expected one input tensor, found {self.inputs}")
        self._dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        shape = _dims(engine.get_tensor_shape(self.inputs[0]))
        self._spec = {"name": self.inputs[0], "shape": shape, "dtype": "float32"}
        self.info.update(device=self.device, tensorrt=str(trt.__version__), gpu=torch.cuda.get_device_name(),
                         cuda_graph_batch=self.cuda_graph_batch)
        super().activate()

    @property
    def input_spec(self) -> dict[str, Any]:
        return self._spec

    def _bind(self, x: Any) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        name = self.inputs[0]
        self.context.set_input_shape(name, trt.Dims(list(x.shape)))
        self.context.set_tensor_address(name, int(x.data_ptr()))
        outs: dict[str, Any] = {}
        for o in self.outputs:
            shape = tuple(_dims(self.context.get_tensor_shape(o)))
            outs[o] = torch.empty(shape, dtype=self._dtypes[o], device=self.device)
            self.context.set_tensor_address(o, int(outs[o].data_ptr()))
        return outs

    def infer_async(self, images: Any) -> Any:
        import torch

        with torch.cuda.stream(self.stream):
            t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
            x = t.to(self.device, dtype=self._dtypes[self.inputs[0]], non_blocking=True).contiguous()
            if self.cuda_graph_batch and x.shape[0] == self.cuda_graph_batch:
                outs = self._replay(x)
            else:
                outs = self._bind(x)
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise BackendError(f"{self.plan.name}: execute_async_v3 failed")
            event = torch.cuda.Event()
            event.record(self.stream)
        return outs, event, x  # x is kept alive until the work is done

    def _replay(self, x: Any) -> dict[str, Any]:
        import torch

        if self._graph is None:
            self._static_in = torch.empty_like(x)
            self._static_in.copy_(x)
            self._static_out = self._bind(self._static_in)
            self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up outside capture
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
            self._graph = graph
        else:
            self._static_in.copy_(x)
        self._graph.replay()
        return {k: v.clone() for k, v in self._static_out.items()}

    def collect(self, handle: Any) -> Any:
        outs, event, _ = handle
        event.synchronize()
        arrays = [as_numpy(outs[o]) for o in self.outputs]
        if len(arrays) == 1:
            return arrays[0][:, 0]
        return tuple(a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a for a in arrays)

    def infer(self, images: Any) -> Any:
        return self.collect(self.infer_async(images))

    def deactivate(self) -> None:
        self._graph = None
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        super().deactivate()


def _torch_dtype(dt: Any) -> Any:
    import tensorrt as trt
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.BF16: torch.bfloat16, trt.DataType.INT64: torch.int64}
    if dt not in table:
        raise BackendError(f"unsupported TensorRT I/O dtype {dt}")
    return table[dt]


def _dims(d: Any) -> list[int]:
    return [int(d[i]) for i in range(len(d))]
