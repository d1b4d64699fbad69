"""The only module that runs TensorRT engines. Written against the TensorRT 10/11 Python API and
type-checked in CI with mypy against tensorrt-stubs; no machine of ours has TensorRT.

I/O lives in PyTorch-owned CUDA memory on a PyTorch-owned stream: addresses go to the execution
context with `set_tensor_address`, work is enqueued with `execute_async_v3(stream)`. No pycuda
context is created (pycuda's context fights PyTorch's primary context). One execution context and
one stream per member, so an ensemble's members overlap on the GPU.

Outputs are read by name (`logits` for a member; `score`, `score_std`, `member_scores` for the fused
graph), never by the engine's order. A batch larger than the engine profile's max is split into
slices the profile accepts. CUDA graphs (`cuda_graph_batch`): captured once in `activate()` (before
serve starts its reader thread, and in thread-local capture mode so another thread's CUDA calls
cannot invalidate it) on an engine and execution context of their own (a second deserialized engine, so
no two contexts share an optimization profile), so a smaller batch (the last of a unit) runs on the
ordinary context and never rebinds the one the graph was captured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.bundle import check_engine, read_verified
from lenstrt.errors import BackendError
from lenstrt.runtime.base import Runner, as_numpy, batch_ranges, order_outputs


def probe() -> tuple[str | None, str]:
    """(TensorRT version or None, why not). The one place outside export/tensorrt.py that imports
    tensorrt: backend choice and `lenstrt info` ask here."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return None, "not installed (pip install 'lenstrt[trt]' on a machine with an NVIDIA GPU)"
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install must not break backend choice or `info`
        return None, f"import failed: {type(exc).__name__}: {exc}"
    if not hasattr(trt, "Builder"):
        return None, "the tensorrt module here has no runtime (stubs or a partial install)"
    from lenstrt.export.tensorrt import version_problem

    if problem := version_problem(str(trt.__version__)):
        return None, problem
    return str(trt.__version__), ""


class TrtRunner(Runner):
    backend = "trt"
    asynchronous = True

    def __init__(self, name: str, plan: str | Path, engine: dict[str, Any], device: str = "cuda",
                 cuda_graph_batch: int | None = None, bundle_dir: str | Path = "BUNDLE",
                 output_names: list[str] | None = None, input_shape: tuple[int, ...] | None = None):
        super().__init__(name, input_shape)
        self.plan, self.engine_entry, self.device = Path(plan), engine, device
        self.cuda_graph_batch, self.bundle_dir = cuda_graph_batch, bundle_dir
        self.output_names = output_names
        self._graph: Any = None

    def _activate(self) -> None:
        try:
            self._set_up()
        except BaseException:  # a failed capture or check must not keep engines and contexts on the GPU
            self._deactivate()
            raise

    def _set_up(self) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BackendError(f"{self.plan.name}: TensorRT needs a CUDA GPU; use --backend ort or torch")
        major, minor = torch.cuda.get_device_capability()
        check_engine(self.engine_entry, str(trt.__version__), torch.cuda.get_device_name(), f"{major}.{minor}",
                     self.bundle_dir)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        blob = read_verified(self.plan, self.engine_entry.get("sha256"))
        self.engine = self._deserialize(blob)
        self.context = self._context(self.engine)
        self.stream = torch.cuda.Stream(device=self.device)
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise BackendError(f"{self.plan}: expected one input tensor, found {self.inputs}")
        self.output_names = self.output_names or self.outputs
        self._dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        shape = _dims(engine.get_tensor_shape(self.inputs[0]))
        self._spec = {"name": self.inputs[0], "shape": shape, "dtype": "float32"}
        lo, _, hi = (_dims(d) for d in engine.get_tensor_profile_shape(self.inputs[0], 0))
        self.min_batch, self.profile_max = lo[0], hi[0]
        self.max_batch = self.profile_max
        self.info.update(device=self.device, tensorrt=str(trt.__version__), gpu=torch.cuda.get_device_name(),
                         profile_batch=[self.min_batch, self.profile_max])
        if self.cuda_graph_batch:
            self._capture(shape, blob)
        self.info.update(cuda_graph_batch=self.cuda_graph_batch)

    def _deserialize(self, blob: bytes) -> Any:
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise BackendError(f"{self.plan}: TensorRT could not deserialize the engine; rebuild it with `lenstrt export`")
        return engine

    def _context(self, engine: Any) -> Any:
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{self.plan}: could not create an execution context (GPU memory?)")
        return context

    def _bind(self, context: Any, x: Any) -> dict[str, Any]:
        """Input shape and addresses for one call; outputs allocated here (PyTorch memory, this stream)."""
        import torch

        name = self.inputs[0]
        if not context.set_input_shape(name, tuple(x.shape)):
            raise BackendError(f"{self.plan.name}: TensorRT refused input shape {tuple(x.shape)} (engine profile "
                               f"batch {self.min_batch}..{self.profile_max}); re-export with --batch MIN,OPT,MAX")
        outs: dict[str, Any] = {o: torch.empty(tuple(_dims(context.get_tensor_shape(o))), dtype=self._dtypes[o],
                                               device=self.device) for o in self.outputs}
        for n, t in ((name, x), *outs.items()):
            # TensorRT needs 256-byte aligned addresses; a False here would leave the last call's address bound
            if not context.set_tensor_address(n, int(t.data_ptr())):
                raise BackendError(f"{self.plan.name}: TensorRT refused the address of tensor {n!r}")
        return outs

    def _execute(self, context: Any) -> None:
        # False here is how a failed enqueue (and a failed graph capture) shows itself.
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.plan.name}: TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _capture(self, shape: list[int], blob: bytes) -> None:
        import torch

        b = min(int(self.cuda_graph_batch or 0), self.profile_max)
        if b < self.min_batch:
            raise BackendError(f"{self.plan.name}: CUDA graph batch {self.cuda_graph_batch} is outside the engine "
                               f"profile ({self.min_batch}..{self.profile_max})")
        self.cuda_graph_batch = b
        # An engine and context of their own: every context starts on profile 0, and TensorRT wants contexts in
        # concurrent use on separate profiles (NvInferRuntime.h); a second engine needs no such argument.
        # Cost: the weights twice (tens of MB for our classifiers) and a second activation block.
        self._graph_engine = self._deserialize(blob)
        self._graph_ctx = self._context(self._graph_engine)
        with torch.cuda.stream(self.stream):  # allocated and zeroed in the order of the runs that read them
            self._static_in = torch.zeros([b, *shape[1:]], dtype=self._dtypes[self.inputs[0]], device=self.device)
            self._static_out = self._bind(self._graph_ctx, self._static_in)
            self._execute(self._graph_ctx)  # the first run does lazy set-up that must not be captured
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self._execute(self._graph_ctx)
        self._graph = graph

    def _infer_async(self, images: Any) -> Any:
        """Enqueues copy-in, the engine and copy-out on this runner's stream; returns a handle for collect."""
        import torch

        with torch.cuda.stream(self.stream):
            t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
            x = t.to(self.device, dtype=self._dtypes[self.inputs[0]], non_blocking=True).contiguous()
            host, bound = [], []
            for a, b in batch_ranges(x.shape[0], self.profile_max):
                if self._graph is not None and b - a == self.cuda_graph_batch:
                    self._static_in.copy_(x[a:b])
                    self._graph.replay()
                    outs = self._static_out  # read by the copy below, in stream order, before the next replay
                else:
                    xs = _engine_slice(x, a, b, self.min_batch)
                    outs = self._bind(self.context, xs)
                    self._execute(self.context)
                    bound.append((xs, outs))  # registered memory must outlive the enqueued work (enqueueV3)
                host.append({k: v[:b - a].to("cpu", non_blocking=True) for k, v in outs.items()})
            event = torch.cuda.Event()
            event.record(self.stream)
        return host, event, (x, bound)  # referenced until collect has waited for the work

    def _collect(self, handle: Any) -> Any:
        host, event, _ = handle
        event.synchronize()
        named = {k: np.concatenate([as_numpy(h[k]) for h in host]) for k in self.outputs}
        return order_outputs(named, list(self.output_names or self.outputs), self.plan.name)

    def _infer(self, images: Any) -> Any:
        return self._collect(self._infer_async(images))

    def _deactivate(self) -> None:
        if getattr(self, "stream", None) is not None:  # no context may be destroyed while its work is on the stream
            self.stream.synchronize()
        self._graph = None
        for attr in ("_static_out", "_static_in", "_graph_ctx", "_graph_engine", "context", "engine", "runtime"):
            if hasattr(self, attr):
                delattr(self, attr)


def _engine_slice(x: Any, a: int, b: int, min_batch: int) -> Any:
    """Rows a:b of a device batch as the engine may take them: at a 256-byte aligned address (a view into
    the middle of the batch need not be: TensorRT requires it) and, below the profile's minimum batch,
    zero-padded up to it (the caller keeps only the first b - a output rows)."""
    import torch

    v = x[a:b]
    if b - a < min_batch:
        return torch.cat([v, v.new_zeros((min_batch - (b - a), *v.shape[1:]))])
    return v if v.data_ptr() % 256 == 0 else v.clone()


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
