"""The backend registry: every backend is declared here once, and nothing else names them.

A `BackendSpec` says what a Runner family (torch, ort, openvino, trt) is: the precisions it runs on each
device, the bundle artifact (format, precision) each precision runs from, why it cannot run here (a probe
over `Capabilities`), and how to make its Runner. `CHOICES` are the names users type (`--backend`,
`--backends`): a family on a device, plus bench-only variants (torch-amp, torch-compile). Backend choice
(select.py), the bench worker, the CLI help and choices, and the GPU checks in serve and bench all read
these tables, so a new backend is one Runner module and one entry below (docs/architecture.md).

Imports only the standard library: `lenstrt --help` builds its choices from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lenstrt.bundle import Bundle
    from lenstrt.runtime.base import Runner

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Device strings: "trt" is ONNX Runtime's TensorRT execution provider, on a CUDA GPU.
DEVICES = {"cpu": "a CPU", "cuda": "CUDA", "trt": "TensorRT EP"}


def on_gpu(device: str) -> bool:
    """Whether work on `device` runs on a CUDA GPU (pinned host memory, streams, NVML)."""
    return device == "trt" or device.startswith("cuda")


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    gpu_name: str | None
    compute_capability: str | None
    ort_providers: tuple[str, ...]
    tensorrt: str | None     # version, or None
    openvino: str | None = None   # version of the OpenVINO runtime, or None
    cpu_bf16: bool = False        # native bf16 compute (AVX512_BF16 or AMX)


@dataclass(frozen=True)
class RunnerRequest:
    """What a backend needs to make one Runner: a member (or the fused graph) of a bundle."""
    bundle: Bundle
    name: str                         # member name, or "fused"
    artifact: dict[str, Any] | None   # the manifest entry it runs (None: torch, which runs the checkpoint)
    device: str
    precision: str
    threads: int
    outputs: list[str]
    cuda_graph_batch: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)   # backend-specific (torch: amp, compile, mc)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.bundle.input["shape"][1:])


@dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str
    precisions: Mapping[str, tuple[str, ...]]       # device -> precisions it runs there
    artifacts: Mapping[str, tuple[str, str]]        # precision -> (artifact format, artifact precision)
    auto_order: Mapping[str, tuple[str, ...]]       # device -> `--precision auto` preference, fastest first
    why_not: Callable[[Capabilities, str], str | None]   # None where it can run on the device here
    make_runner: Callable[[RunnerRequest], Runner]
    fused: bool = True                # runs the fused ensemble graph
    bf16_needs_native: bool = False   # bf16 is refused (not emulated) on CPUs without native bf16
    flags: Mapping[str, str] = field(default_factory=dict)   # precision -> the export flag that makes it

    def supports(self, device: str, precision: str) -> bool:
        return precision in self.precisions.get(device, ())


@dataclass(frozen=True)
class Choice:
    """A name users type: a backend on a device (None: the GPU where this backend can use one here)."""
    name: str
    backend: str
    device: str | None
    help: str
    bench_only: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    bench_device: str | None = None   # bench pins the device (its `ort` rows are the CPU's)
    bench_options: Mapping[str, Any] = field(default_factory=dict)   # bench: the reference is torch fp32


# -- probes -------------------------------------------------------------------------------------------

def _torch_why(caps: Capabilities, device: str) -> str | None:
    return None if device == "cpu" or caps.cuda else "needs a CUDA GPU (torch sees none)"


def _ort_why(caps: Capabilities, device: str) -> str | None:
    if device == "cpu":
        return None
    if device == "cuda" and not (caps.cuda and "CUDAExecutionProvider" in caps.ort_providers):
        return ("needs onnxruntime-gpu and a CUDA GPU (available providers: "
                f"{', '.join(caps.ort_providers)})")
    if device == "trt" and not (caps.cuda and "TensorrtExecutionProvider" in caps.ort_providers):
        return "needs onnxruntime-gpu with TensorRT libraries and a CUDA GPU"
    return None


def _openvino_why(caps: Capabilities, device: str) -> str | None:
    if device != "cpu":
        return "runs on the CPU only"
    return None if caps.openvino else "needs OpenVINO: OpenVINO is not installed; pip install 'lenstrt[openvino]'"


def _trt_why(caps: Capabilities, device: str) -> str | None:
    if not caps.tensorrt:
        return "needs TensorRT: not installed (pip install 'lenstrt[trt]' on a machine with an NVIDIA GPU)"
    return None if caps.cuda else "needs a CUDA GPU"


# -- runner factories (lazy: each imports its backend library only when called) ----------------------------

def _torch_runner(req: RunnerRequest) -> Runner:
    from lenstrt.runtime.torch import TorchRunner

    m = next(m for m in req.bundle.members if m.name == req.name)
    ck = m.entry["checkpoint"]
    o = req.options
    return TorchRunner(m.name, req.bundle.path(ck), req.device, amp=o.get("amp"), compile=bool(o.get("compile")),
                       mc_samples=int(o.get("mc_samples") or 0), threads=req.threads, sha256=ck["sha256"],
                       input_shape=req.input_shape)


def _ort_runner(req: RunnerRequest) -> Runner:
    from lenstrt.runtime.ort import OrtRunner

    art = req.artifact or {}
    b = req.bundle.manifest.get("batch", {})
    batch = (1, b["opt"], b["max"]) if b else None  # ORT builds its own engines: min 1 takes a unit's last batch
    return OrtRunner(req.name, req.bundle.path(art), req.device, art.get("ort_opt_level", "all"), req.threads,
                     output_names=req.outputs, batch=batch, sha256=art.get("sha256"), input_shape=req.input_shape)


def _openvino_runner(req: RunnerRequest) -> Runner:
    from lenstrt.runtime.openvino import OpenVinoRunner

    art = req.artifact or {}
    return OpenVinoRunner(req.name, req.bundle.path(art), req.precision, req.threads, output_names=req.outputs,
                          sha256=art.get("sha256"), input_shape=req.input_shape)


def _trt_runner(req: RunnerRequest) -> Runner:
    from lenstrt.runtime.trt import TrtRunner

    art = req.artifact or {}
    return TrtRunner(req.name, req.bundle.path(art), art, cuda_graph_batch=req.cuda_graph_batch,
                     bundle_dir=req.bundle.root, output_names=req.outputs, input_shape=req.input_shape)


_GRAPHS = {"fp32": ("onnx", "fp32"), "fp16": ("onnx", "fp16"), "int8": ("onnx", "int8")}
_EXPORT_FLAGS = {"fp16": "--fp16", "int8": "--int8"}

BACKENDS: dict[str, BackendSpec] = {s.name: s for s in (
    BackendSpec("torch", "PyTorch eager on the bundle's checkpoints (autocast for bf16/fp16)",
                precisions={"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16")},
                # autocast over the fp32 checkpoint: every precision runs from it
                artifacts={p: ("checkpoint", "fp32") for p in ("fp32", "bf16", "fp16")},
                auto_order={"cpu": ("fp32",), "cuda": ("fp16",)},
                why_not=_torch_why, make_runner=_torch_runner, fused=False),
    BackendSpec("ort", "ONNX Runtime (CPU, CUDA or TensorRT execution provider)",
                precisions={d: ("fp32", "fp16", "int8") for d in ("cpu", "cuda", "trt")},
                artifacts=_GRAPHS,
                # fp16 brings no speed on CPUs (and crashed ORT's ALL level here); INT8 is ~3x fp32 there
                auto_order={"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "trt": ("fp16", "fp32")},
                why_not=_ort_why, make_runner=_ort_runner, flags=_EXPORT_FLAGS),
    BackendSpec("openvino", "OpenVINO on the CPU (pip install 'lenstrt[openvino]')",
                precisions={"cpu": ("fp32", "bf16", "int8")},
                # bf16 is an inference-precision hint over the fp32 graph
                artifacts={"fp32": ("onnx", "fp32"), "bf16": ("onnx", "fp32"), "int8": ("onnx", "int8")},
                auto_order={"cpu": ("int8", "fp32")},
                why_not=_openvino_why, make_runner=_openvino_runner, bf16_needs_native=True, flags=_EXPORT_FLAGS),
    BackendSpec("trt", "TensorRT engines built by `lenstrt export` on this GPU",
                precisions={"cuda": ("fp32", "fp16", "int8")},
                artifacts={"fp32": ("plan", "fp32"), "fp16": ("plan", "fp16"), "int8": ("plan", "int8")},
                auto_order={"cuda": ("int8", "fp16", "fp32")},
                why_not=_trt_why, make_runner=_trt_runner, flags=_EXPORT_FLAGS),
)}

CHOICES: dict[str, Choice] = {c.name: c for c in (
    Choice("torch", "torch", None, "PyTorch eager (CUDA if present)", bench_options={"amp": False}),
    Choice("ort", "ort", None, "ONNX Runtime (CUDA provider if present)", bench_device="cpu"),
    Choice("ort-cuda", "ort", "cuda", "ONNX Runtime CUDA provider"),
    Choice("ort-trt", "ort", "trt", "ONNX Runtime TensorRT provider"),
    Choice("trt", "trt", "cuda", "TensorRT engines"),
    Choice("openvino", "openvino", "cpu", "OpenVINO on the CPU"),
    Choice("torch-amp", "torch", None, "PyTorch with autocast (bf16 CPU, fp16 CUDA)", bench_only=True,
           options={"amp": True}),
    Choice("torch-compile", "torch", None, "PyTorch with torch.compile", bench_only=True,
           options={"compile": True}, bench_options={"amp": False}),
)}


def serve_names() -> list[str]:
    """`--backend` values for serve: auto and every non-bench-only choice."""
    return ["auto", *(n for n, c in CHOICES.items() if not c.bench_only)]


def bench_names() -> list[str]:
    return list(CHOICES)


def choice(name: str, where: str = "--backend") -> Choice:
    from lenstrt.errors import ConfigError

    if name not in CHOICES:
        raise ConfigError(f"{where} {name!r}: choose one of {', '.join(['auto', *CHOICES])}")
    return CHOICES[name]


def supported_anywhere(name: str, precision: str) -> bool:
    """Whether the choice `name` runs `precision` on some device (bench grids skip the others)."""
    c = CHOICES.get(name)
    if c is None:
        return False
    if precision == "auto":
        return True
    if c.options.get("amp"):
        return False  # torch-amp is torch at bf16/fp16: ask for `torch` with --precision instead
    return any(precision in p for p in BACKENDS[c.backend].precisions.values())


def precision_help() -> str:
    """One line per backend: what it runs where (CLI help and errors)."""
    return "; ".join(f"{s.name}: " + ", ".join(f"{'/'.join(p)} on {d}" for d, p in s.precisions.items())
                     for s in BACKENDS.values())
