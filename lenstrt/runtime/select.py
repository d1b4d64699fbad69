"""Backend choice (`--backend auto|torch|ort|ort-cuda|ort-trt|trt`) and ensemble construction from a bundle.

auto picks trt > ort-cuda > ort-cpu > torch by what is installed, present and matching, and says why.
On a GPU ONNX Runtime runs the fp16 graph; on a CPU the fp32 graph (fp16 brings no speed on CPUs and
crashed ORT's ALL optimisation level here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lenstrt.bundle import Bundle, check_engine
from lenstrt.errors import BackendError, BundleError, ConfigError

BACKENDS = ("auto", "torch", "ort", "ort-cuda", "ort-trt", "trt")


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    gpu_name: str | None
    compute_capability: str | None
    ort_providers: tuple[str, ...]
    tensorrt: str | None     # version, or None


def detect() -> Capabilities:
    import onnxruntime as ort
    import torch

    from lenstrt.runtime.trt import probe

    cuda = torch.cuda.is_available()
    name = cc = None
    if cuda:
        name = torch.cuda.get_device_name()
        cc = "{}.{}".format(*torch.cuda.get_device_capability())
    return Capabilities(cuda, name, cc, tuple(ort.get_available_providers()), probe()[0])


def choose_backend(requested: str, caps: Capabilities, bundle: Bundle, fused: bool = False) -> tuple[str, str, str]:
    """(backend, device, why). `fused`: the fused graph will be served, so its engine is the one that counts."""
    if requested not in BACKENDS:
        raise ConfigError(f"--backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if fused and not bundle.fused:
        raise BundleError(f"{bundle.root}: no fused graph; re-export with --fuse or serve with --separate")
    plans = [(bundle.fused or {}).get("artifacts", {}).get("plan")] if fused else [m.artifact("plan") for m in bundle.members]
    gpu_ort = caps.cuda and "CUDAExecutionProvider" in caps.ort_providers
    if requested == "trt" or requested == "auto":
        problem = None
        if not all(plans):
            problem = ("the bundle's fused graph has no TensorRT engine" if fused else
                       "the bundle has no TensorRT engines") + " (exported without TensorRT)"
        else:
            try:
                for plan in plans:
                    check_engine(plan or {}, caps.tensorrt, caps.gpu_name, caps.compute_capability, bundle.root)
            except BundleError as exc:
                problem = str(exc)
        if problem is None:
            return "trt", "cuda", f"TensorRT {caps.tensorrt} engines on {caps.gpu_name}"
        if requested == "trt":
            raise BackendError(f"--backend trt: {problem}")
        if gpu_ort:
            return "ort", "cuda", f"ONNX Runtime CUDA on {caps.gpu_name} (no TensorRT: {problem})"
        where = "no CUDA GPU" if not caps.cuda else "no CUDA provider in onnxruntime"
        return "ort", "cpu", f"ONNX Runtime on the CPU ({where}; TensorRT: {problem})"
    if requested == "ort-trt":
        if not (caps.cuda and "TensorrtExecutionProvider" in caps.ort_providers):
            raise BackendError("--backend ort-trt needs onnxruntime-gpu with TensorRT libraries and a CUDA GPU")
        return "ort", "trt", "ONNX Runtime TensorRT execution provider"
    if requested in ("ort", "ort-cuda"):
        if requested == "ort-cuda" and not gpu_ort:
            raise BackendError("--backend ort-cuda needs onnxruntime-gpu and a CUDA GPU (available providers: "
                               f"{', '.join(caps.ort_providers)})")
        return ("ort", "cuda", "ONNX Runtime CUDA") if gpu_ort else ("ort", "cpu", "ONNX Runtime CPU")
    return "torch", "cuda" if caps.cuda else "cpu", "PyTorch eager" + (" on CUDA with fp16 autocast" if caps.cuda else "")


def build_ensemble(bundle: Bundle, backend: str, device: str, fused: bool = False, fusion: str = "mean",
                   mc_samples: int = 0, compile: bool = False, cuda_graph_batch: int | None = None,
                   concurrency: str = "auto", threads: int | None = None, amp: bool | None = None,
                   only: list[str] | None = None):
    """`only`: serve a subset of the members (bench times members alone this way)."""
    from lenstrt.runtime.ensemble import Ensemble

    members = [m for m in bundle.members if only is None or m.name in only]
    names = [m.name for m in members]
    temps = [m.temperature for m in members]
    cores = threads or os.cpu_count() or 1
    if mc_samples and backend != "torch":
        raise ConfigError("--mc-samples needs the torch backend (dropout is folded away in exported graphs)")
    if concurrency == "auto":
        # Measured on a 2-core CPU (docs/bench.md): members one after another, each with every core, beat
        # members in parallel threads (0.82-0.96x for ORT, 0.6x for torch); GPUs overlap members on streams.
        concurrency = "streams" if device in ("cuda", "trt") else "sequential"
    if fused:
        if not bundle.fused:
            raise BundleError(f"{bundle.root}: no fused graph; re-export with --fuse or serve with --separate")
        if backend == "torch":
            raise ConfigError("--fused runs the fused ONNX graph or engine; use --backend ort or trt")
        arts = bundle.fused["artifacts"]
        runner = _runner(bundle, backend, device, "fused", arts, cores, cuda_graph_batch, list(bundle.fused["outputs"]))
        return Ensemble([runner], names, temps, fusion, "sequential", fused=True, device=device)
    per = max(1, cores // len(members)) if concurrency == "threads" else cores
    runners = []
    for m in members:
        if backend == "torch":
            from lenstrt.runtime.torch import TorchRunner

            runners.append(TorchRunner(m.name, bundle.path(m.entry["checkpoint"]), device, amp=amp, compile=compile,
                                       mc_samples=mc_samples, threads=cores, sha256=m.entry["checkpoint"]["sha256"]))
        else:
            runners.append(_runner(bundle, backend, device, m.name, m.entry["artifacts"], per, cuda_graph_batch,
                                   [bundle.manifest["output"]["name"]]))
    return Ensemble(runners, names, temps, fusion, concurrency, mc_samples=mc_samples, device=device)


def _runner(bundle: Bundle, backend: str, device: str, name: str, arts: dict, threads: int, cuda_graph_batch,
            outputs: list[str]):
    if backend == "trt":
        from lenstrt.runtime.trt import TrtRunner

        if "plan" not in arts:
            raise BundleError(f"{bundle.root}: {name} has no TensorRT engine; re-export on this GPU")
        return TrtRunner(name, bundle.path(arts["plan"]), arts["plan"], cuda_graph_batch=cuda_graph_batch,
                         bundle_dir=bundle.root, output_names=outputs)
    from lenstrt.runtime.ort import OrtRunner

    art = arts["onnx_fp16"] if device in ("cuda", "trt") and "onnx_fp16" in arts else arts["onnx"]
    b = bundle.manifest.get("batch", {})
    batch = (1, b["opt"], b["max"]) if b else None  # ORT builds its own engines: min 1 takes a unit's last batch
    return OrtRunner(name, bundle.path(art), device, art.get("ort_opt_level", "all"), threads, output_names=outputs,
                     batch=batch, sha256=art["sha256"])
