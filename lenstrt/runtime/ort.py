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
from lenstrt.runtime.base import Runner, as_numpy, order_outputs

OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def make_session(path: str | Path, device: str = "cpu", opt_level: str = "all", threads: int | None = None,
                 provider_options: dict[str, dict[str, Any]] | None = None, model: bytes | None = None):
    """An InferenceSession over `path` (or over `model`, its bytes already read and verified)."""
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
        return ort.InferenceSession(model if model is not None else str(path), sess_options=so, providers=providers,
                                    provider_options=opts)
    except Exception as exc:
        raise BackendError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc


def run_session(session, images: np.ndarray) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})


def trt_provider_options(input_name: str, chw: tuple[int, int, int], batch: tuple[int, int, int],
                         cache_dir: str | Path, fp16: bool) -> dict[str, Any]:
    """ONNX Runtime TensorRT execution provider options: explicit profile shapes (without them it builds
    for the first shape it sees and rebuilds, minutes each, whenever a batch differs) and engine and
    timing caches in `cache_dir`, outside the bundle (a bundle is read-only, checksummed and may be
    shared between machines whose GPUs differ)."""
    c, h, w = chw
    shape = lambda n: f"{input_name}:{n}x{c}x{h}x{w}"  # noqa: E731
    return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
            "trt_profile_min_shapes": shape(batch[0]), "trt_profile_opt_shapes": shape(batch[1]),
            "trt_profile_max_shapes": shape(batch[2])}


def default_trt_cache_dir(model: Path, gpu: str = "") -> Path:
    """~/.cache/lenstrt/ort-trt/<graph>-<hash of its path, size, time and the GPU's name>: one cache per graph
    and GPU model, outside the bundle."""
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lenstrt" / "ort-trt"
    st = model.stat()
    # and by GPU model: a home directory shared by H100 and H200 nodes (both sm 9.0) must not share engines
    tag = hashlib.sha256(f"{model.resolve()}:{st.st_size}:{st.st_mtime_ns}:{gpu}".encode()).hexdigest()[:16]
    return base / f"{model.stem}-{tag}"


class OrtRunner(Runner):
    """Runner over one ONNX graph. `device`: cpu | cuda | trt (ORT's TensorRT execution provider)."""

    backend = "ort"

    def __init__(self, name: str, path: str | Path, device: str = "cpu", opt_level: str = "all",
                 threads: int | None = None, trt_cache_dir: str | None = None, output_names: list[str] | None = None,
                 batch: tuple[int, int, int] | None = None, sha256: str | None = None,
                 input_shape: tuple[int, ...] | None = None):
        """`sha256`: the manifest's digest; the graph is refused if its bytes differ."""
        super().__init__(name, input_shape)
        self.sha256 = sha256
        self.path, self.device, self.opt_level, self.threads = Path(path), device, opt_level, threads
        self.trt_cache_dir, self.output_names, self.batch = trt_cache_dir, output_names, batch
        self.session = None

    def _activate(self) -> None:
        import onnx

        opts: dict[str, dict[str, Any]] = {}
        if self.device == "trt":
            import torch

            gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
            cache = Path(self.trt_cache_dir) if self.trt_cache_dir else default_trt_cache_dir(self.path, gpu)
            cache.mkdir(parents=True, exist_ok=True)
            graph_in = onnx.load(str(self.path), load_external_data=False).graph.input[0]
            dims = [d.dim_value for d in graph_in.type.tensor_type.shape.dim[1:]]
            batch = self.batch or (1, 64, 1024)
            # No fp16 flag: the runner is given the mixed-precision graph, whose dtypes TensorRT keeps
            # (the flag is deprecated in TensorRT 10.12 and gone in 11, and would let weak typing push
            # the fp32 preprocessing into fp16).
            opts["TensorrtExecutionProvider"] = trt_provider_options(graph_in.name, (dims[0], dims[1], dims[2]),
                                                                     batch, cache, fp16=False)
            self.max_batch = batch[2]  # a shape outside the profile is an error: the ensemble splits batches
        from lenstrt.bundle import read_verified

        model = read_verified(self.path, self.sha256)
        self.session = make_session(self.path, self.device, self.opt_level, self.threads, opts, model=model)
        got = self.session.get_providers()
        wanted = PROVIDERS[self.device][0]
        if wanted not in got:
            raise BackendError(f"{self.path.name}: ONNX Runtime could not use {wanted} (got {got}); install "
                               "onnxruntime-gpu (it replaces onnxruntime) and check CUDA, or use --backend ort on CPU")
        i = self.session.get_inputs()[0]
        self._spec = {"name": i.name, "shape": [-1 if not isinstance(d, int) else d for d in i.shape],
                      "dtype": "float32"}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output_names = self.output_names or self.outputs
        import onnxruntime as ort

        self.info.update(device=self.device, providers=got, opt_level=self.opt_level,
                         threads=self.threads, onnxruntime=ort.__version__)

    def _infer(self, images):
        x = as_numpy(images)
        if self.device == "cpu":
            outs = self.session.run(self.output_names, {self._spec["name"]: x})
        else:
            outs = self._run_bound(x)
        return order_outputs(dict(zip(self.output_names, outs)), self.output_names, self.path.name)

    def _run_bound(self, x: np.ndarray):
        """IO binding on CUDA: the input is copied once and outputs stay on the device until fetched."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._spec["name"], x)
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _deactivate(self) -> None:
        self.session = None
