"""Backend choice (`--backend auto|torch|ort|ort-cuda|ort-trt|trt|openvino`), precision choice
(`--precision auto|fp32|bf16|fp16|int8`) and ensemble construction from a bundle.

auto picks trt > ort-cuda > (on a CPU) the validated INT8 graph on OpenVINO or ONNX Runtime > ort-cpu >
torch by what is installed, present and matching, and says why. On a GPU ONNX Runtime runs the fp16 graph;
on a CPU the INT8 graph where the bundle has a validated one (3-3.6x fp32, measured), else the fp32 graph
(fp16 brings no speed on CPUs and crashed ORT's ALL optimisation level here).

A precision means the same on every backend: fp32 = the fp32 graph (torch: no autocast); bf16 = bf16
compute with fp32 I/O (torch: CPU autocast; OpenVINO: INFERENCE_PRECISION_HINT, CPUs with native bf16
only); fp16 = the mixed fp16 graph (torch: CUDA autocast); int8 = the bundle's validated INT8 QDQ graph.
`auto` = the fastest precision the bundle validated for that backend and device (bf16 is not validated
at export, so `auto` never picks it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lenstrt.bundle import Bundle, check_engine
from lenstrt.envinfo import cpu_has_native_bf16 as cpu_has_bf16
from lenstrt.errors import BackendError, BundleError, ConfigError

BACKENDS = ("auto", "torch", "ort", "ort-cuda", "ort-trt", "trt", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# What each backend runs, per device (an unlisted pair is a clear error).
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16")},
    "ort": {"cpu": ("fp32", "fp16", "int8"), "cuda": ("fp32", "fp16", "int8"), "trt": ("fp32", "fp16", "int8")},
    "openvino": {"cpu": ("fp32", "bf16", "int8")},
    "trt": {"cuda": ("fp32", "fp16", "int8")},
}
# The ONNX artifact a precision runs from (bf16 is a runtime hint over the fp32 graph).
GRAPH = {"fp32": "onnx", "bf16": "onnx", "fp16": "onnx_fp16", "int8": "onnx_int8"}


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    gpu_name: str | None
    compute_capability: str | None
    ort_providers: tuple[str, ...]
    tensorrt: str | None     # version, or None
    openvino: str | None = None   # version of the OpenVINO runtime, or None
    cpu_bf16: bool = False        # native bf16 compute (AVX512_BF16 or AMX)


def openvino_version() -> str | None:
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def detect() -> Capabilities:
    import onnxruntime as ort
    import torch

    from lenstrt.runtime.trt import probe

    cuda = torch.cuda.is_available()
    name = cc = None
    if cuda:
        name = torch.cuda.get_device_name()
        cc = "{}.{}".format(*torch.cuda.get_device_capability())
    return Capabilities(cuda, name, cc, tuple(ort.get_available_providers()), probe()[0], openvino_version(),
                        cpu_has_bf16())


def _graphs(bundle: Bundle, fused: bool, only: list[str] | None = None) -> list[dict]:
    """The artifact dicts that will be served: the fused graph's, or each member's."""
    if fused:
        return [(bundle.fused or {}).get("artifacts", {})]
    return [m.entry.get("artifacts", {}) for m in bundle.members if only is None or m.name in only]


def _int8_note(bundle: Bundle, fused: bool) -> str:
    if fused:
        a = (bundle.fused or {}).get("artifacts", {}).get("onnx_int8", {}).get("agreement", {})
        return f"fused mean |Δp| {a.get('mean_abs_prob_diff', float('nan')):.1e}"
    parts = []
    for m in bundle.members:
        a = m.entry.get("agreement", {}).get("int8", {})
        parts.append(f"{m.name} AUC drop {a.get('auc_drop', 0):+.4f}, top-100 {a.get('top100_overlap', 1):.2f}")
    return "; ".join(parts)


def resolve_precision(backend: str, device: str, requested: str | None, bundle: Bundle, fused: bool = False,
                      only: list[str] | None = None, cpu_bf16: bool | None = None) -> tuple[str, str]:
    """(precision, why) for `backend` on `device`. Raises a clear error where the backend cannot run the
    requested precision or the bundle has no graph for it."""
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    supported = SUPPORTED.get(backend, {}).get(device, ())
    graphs = _graphs(bundle, fused, only)
    if backend == "trt":
        plans = [g.get("plan") or {} for g in graphs]
        built = {str(p.get("precision", "fp16")).split()[0] for p in plans}
        got = built.pop() if len(built) == 1 else "fp16"
        if requested in ("auto", "int8") and graphs and all("plan_int8" in g for g in graphs):
            return "int8", "the bundle's validated INT8 engines (explicit quantization)"
        if requested not in ("auto", got):
            raise BackendError(f"--precision {requested}: the bundle's TensorRT engines are {got}; rebuild them "
                               f"with `lenstrt export` ({'--int8' if requested == 'int8' else '--fp16'}) on this GPU")
        return got, f"TensorRT engines built {got}"
    if requested == "auto":
        if backend == "torch":
            return ("fp16", "CUDA autocast") if device == "cuda" else \
                ("fp32", "fp32 (bf16 is not validated at export: --precision bf16 for ~1.7x on bf16 CPUs)")
        if device == "cpu" and graphs and all("onnx_int8" in g for g in graphs):
            return "int8", f"the bundle's validated INT8 graph ({_int8_note(bundle, fused)})"
        if device in ("cuda", "trt") and graphs and all("onnx_fp16" in g for g in graphs):
            return "fp16", "the bundle's fp16 graph"
        return "fp32", "the fp32 graph" + (" (no INT8 graph: export with --int8 for ~3x on CPUs)"
                                           if device == "cpu" else "")
    if requested not in supported:
        where = {"cpu": "a CPU", "cuda": "CUDA", "trt": "TensorRT EP"}.get(device, device)
        raise BackendError(f"--precision {requested}: the {backend} backend on {where} runs "
                           f"{', '.join(supported) or 'nothing'}; choose one of those or another --backend")
    if backend != "torch":
        key = GRAPH[requested]
        if not graphs or not all(key in g for g in graphs):
            what = "fused graph" if fused else "members"
            flag = {"int8": "--int8", "fp16": "--fp16"}.get(requested, "")
            raise BundleError(f"{bundle.root}: the {what} have no {requested} graph; re-export with {flag}")
        if requested == "bf16" and backend == "openvino" and not (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
            raise BackendError("--precision bf16 with openvino needs a CPU with native bf16 (AVX512_BF16 or AMX); "
                               "this one has neither: use fp32 or int8")
    return requested, f"{requested} (requested)"


def choose_backend(requested: str, caps: Capabilities, bundle: Bundle, fused: bool = False,
                   precision: str | None = None) -> tuple[str, str, str]:
    """(backend, device, why). `fused`: the fused graph will be served, so its engine is the one that counts.
    `precision`: --precision; `why` ends with the precision the backend will run and why."""
    if requested not in BACKENDS:
        raise ConfigError(f"--backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if fused and not bundle.fused:
        raise BundleError(f"{bundle.root}: no fused graph; re-export with --fuse or serve with --separate")
    if precision not in (None, "auto"):
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    backend, device, why = _choose(requested, caps, bundle, fused, precision or "auto")
    prec, pwhy = resolve_precision(backend, device, precision, bundle, fused, cpu_bf16=caps.cpu_bf16)
    return backend, device, f"{why}; precision {prec}: {pwhy}"


def _cpu_auto(caps: Capabilities, bundle: Bundle, fused: bool, precision: str, problem: str | None,
              where: str) -> tuple[str, str, str]:
    """auto on a CPU: the validated INT8 graph (OpenVINO 3.6x, ONNX Runtime 3.1x fp32 here) where the bundle
    has one, bf16 on OpenVINO where asked and native, else ONNX Runtime fp32."""
    tail = f" ({where}; TensorRT: {problem})" if problem else f" ({where})"
    has_int8 = all("onnx_int8" in g for g in _graphs(bundle, fused))
    if precision in ("auto", "int8") and has_int8:
        if caps.openvino:
            return "openvino", "cpu", f"OpenVINO {caps.openvino} on the CPU, INT8 graph" + tail
        return "ort", "cpu", "ONNX Runtime on the CPU, INT8 graph (OpenVINO, ~15% faster, is not installed)" + tail
    if precision == "bf16":
        if caps.openvino and caps.cpu_bf16:
            return "openvino", "cpu", f"OpenVINO {caps.openvino} on the CPU, bf16" + tail
        return "torch", "cpu", "PyTorch bf16 autocast on the CPU" + tail
    return "ort", "cpu", "ONNX Runtime on the CPU" + tail


def _choose(requested: str, caps: Capabilities, bundle: Bundle, fused: bool, precision: str) -> tuple[str, str, str]:
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
        return _cpu_auto(caps, bundle, fused, precision, problem, where)
    if requested == "openvino":
        if not caps.openvino:
            raise BackendError("--backend openvino: OpenVINO is not installed; pip install 'lenstrt[openvino]'")
        return "openvino", "cpu", f"OpenVINO {caps.openvino} on the CPU"
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
                   only: list[str] | None = None, precision: str | None = None):
    """`only`: serve a subset of the members (bench times members alone this way). `precision`: see
    `resolve_precision` (None/auto: the fastest the bundle validated; torch: `amp` decides)."""
    from lenstrt.runtime.ensemble import Ensemble

    prec, _ = resolve_precision(backend, device, precision, bundle, fused, only)
    if backend == "torch" and precision not in (None, "auto"):
        amp = prec != "fp32"

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
        runner = _runner(bundle, backend, device, "fused", arts, cores, cuda_graph_batch, list(bundle.fused["outputs"]),
                         prec)
        runner.info["precision"] = prec
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
                                   [bundle.manifest["output"]["name"]], prec))
        runners[-1].info["precision"] = (("bf16" if device == "cpu" else "fp16") if amp or (amp is None and device != "cpu")
                                         else "fp32") if backend == "torch" else prec
    return Ensemble(runners, names, temps, fusion, concurrency, mc_samples=mc_samples, device=device)


def _runner(bundle: Bundle, backend: str, device: str, name: str, arts: dict, threads: int, cuda_graph_batch,
            outputs: list[str], precision: str = "auto"):
    if backend == "trt":
        from lenstrt.runtime.trt import TrtRunner

        key = "plan_int8" if precision == "int8" else "plan"
        if key not in arts:
            raise BundleError(f"{bundle.root}: {name} has no TensorRT engine; re-export on this GPU")
        return TrtRunner(name, bundle.path(arts[key]), arts[key], cuda_graph_batch=cuda_graph_batch,
                         bundle_dir=bundle.root, output_names=outputs)
    if precision in GRAPH:
        key = GRAPH[precision]
        if key not in arts:
            raise BundleError(f"{bundle.root}: {name} has no {precision} graph; re-export it")
        art = arts[key]
    else:
        art = arts["onnx_fp16"] if device in ("cuda", "trt") and "onnx_fp16" in arts else arts["onnx"]
    if backend == "openvino":
        from lenstrt.runtime.openvino import OpenVinoRunner

        return OpenVinoRunner(name, bundle.path(art), precision if precision in GRAPH else "fp32", threads,
                              output_names=outputs, sha256=art["sha256"])
    from lenstrt.runtime.ort import OrtRunner

    b = bundle.manifest.get("batch", {})
    batch = (1, b["opt"], b["max"]) if b else None  # ORT builds its own engines: min 1 takes a unit's last batch
    return OrtRunner(name, bundle.path(art), device, art.get("ort_opt_level", "all"), threads, output_names=outputs,
                     batch=batch, sha256=art["sha256"])
