"""Backend choice (`--backend auto|torch|ort|ort-cuda|ort-trt|trt|openvino`), precision choice
(`--precision auto|fp32|bf16|fp16|int8`) and ensemble construction from a bundle.

auto picks trt > ort-cuda > (on a CPU) the INT8 graph on OpenVINO or ONNX Runtime, where export validated
it on that runtime (`runtimes`) > ort-cpu > torch by what is installed, present and matching, and says
why. On a GPU ONNX Runtime runs the fp16 graph; on a CPU the INT8 graph where the bundle has a validated
one (3-3.6x fp32, measured), else the fp32 graph (fp16 brings no speed on CPUs and crashed ORT's ALL
optimisation level here).

A precision means the same on every backend: fp32 = the fp32 graph (torch: no autocast); bf16 = bf16
compute with fp32 I/O (torch: CPU autocast; OpenVINO: INFERENCE_PRECISION_HINT, CPUs with native bf16
only); fp16 = the mixed fp16 graph (torch: CUDA autocast); int8 = the bundle's validated INT8 QDQ graph.
`auto` = the fastest precision the bundle validated for that backend and device (bf16 is not validated
at export, so `auto` never picks it).

What each backend is (its precisions per device, the artifact each precision runs from, why it cannot
run here, how its Runner is made) lives in runtime/registry.py; this module holds only the policy.
"""

from __future__ import annotations

import os

from lenstrt.bundle import Bundle, check_engine, find, precisions
from lenstrt.envinfo import cpu_has_native_bf16 as cpu_has_bf16
from lenstrt.errors import BackendError, BundleError, ConfigError
from lenstrt.runtime.registry import BACKENDS as SPECS
from lenstrt.runtime.registry import (
    DEVICES,
    Capabilities,
    RunnerRequest,
    choice,
    on_gpu,
    serve_names,
)
from lenstrt.runtime.registry import PRECISIONS as _PRECISIONS

__all__ = ["BACKENDS", "PRECISIONS", "SUPPORTED", "Capabilities", "detect", "choose_backend",
           "resolve_precision", "build_ensemble", "cpu_has_bf16"]

# Derived from the registry (runtime/registry.py), kept for callers of the names they had.
BACKENDS = tuple(serve_names())
PRECISIONS = ("auto", *_PRECISIONS)
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {n: dict(s.precisions) for n, s in SPECS.items()}


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
    return bundle.graphs(fused, only)


# The CPU runtime each backend runs an INT8 graph on, as the manifest's `runtimes` names it: export gates the
# graph on each one installed, and a CPU without VNNI can pass one and refuse the other (docs/export.md)
INT8_RUNTIME = {"ort": "onnxruntime", "openvino": "openvino"}
INT8_RUNTIME_BACKEND = {v: k for k, v in INT8_RUNTIME.items()}


def _int8_runtimes(art: dict) -> list[str]:
    # bundles from before per-runtime gates passed ONNX Runtime's, which held for both then
    return list(art.get("runtimes") or INT8_RUNTIME.values())


def _int8_runs_on(graphs: list[dict], backend: str) -> bool:
    """Every graph has an INT8 graph and each passed its gate on `backend`'s runtime."""
    rt = INT8_RUNTIME.get(backend)
    return _has(graphs, "onnx", "int8") and all(rt is None or rt in _int8_runtimes(find(g, "onnx", "int8") or {})
                                                 for g in graphs)


def _int8_refusal(graphs: list[dict], backend: str) -> str:
    """Why `backend` may not run the bundle's INT8 graphs, and where they were validated instead."""
    rt = INT8_RUNTIME[backend]
    for g in graphs:
        art = find(g, "onnx", "int8") or {}
        if rt not in _int8_runtimes(art):
            others = [INT8_RUNTIME_BACKEND[r] for r in _int8_runtimes(art)]
            why = (art.get("refused") or {}).get(rt, "not checked at export")
            return (f"the bundle's INT8 graph {art.get('path', '')} did not pass its gate on {rt} at export ({why})"
                    + (f"; it did on --backend {', '.join(others)}" if others else ""))
    return ""



def _int8_note(bundle: Bundle, fused: bool, backend: str = "ort") -> str:
    own = backend != "ort"  # OpenVINO's own figures where export measured them
    if fused:
        art = find(_graphs(bundle, True)[0], "onnx", "int8") or {}
        a = (own and art.get(f"agreement_{backend}")) or art.get("agreement", {})
        return f"fused mean |Δp| {a.get('mean_abs_prob_diff', float('nan')):.1e}"
    parts = []
    for m in bundle.members:
        ag = m.entry.get("agreement", {})
        a = (own and ag.get(f"int8_{backend}")) or ag.get("int8", {})
        parts.append(f"{m.name} AUC drop {a.get('auc_drop', 0):+.4f}, top-100 {a.get('top100_overlap', 1):.2f}")
    return "; ".join(parts)


def _int8_host_note(bundle: Bundle) -> str:
    """A warning where the INT8 graph was validated on a CPU with VNNI/AMX and this one has neither: its
    uint8 x int8 products can saturate here (mean |Δp| 0.005 -> 0.037 for one graph, docs/export.md)."""
    from lenstrt.envinfo import cpu_has_int8_dot

    if (bundle.manifest.get("exported_on") or {}).get("cpu_int8_dot") and not cpu_has_int8_dot():
        return ("; warning: validated on a CPU with VNNI, this one has none, where INT8 can move scores more: "
                "check with `lenstrt bench --precision int8` (agreement) or re-export here")
    return ""


def _has(graphs: list[dict], fmt: str, precision: str) -> bool:
    return bool(graphs) and all(find(g, fmt, precision) for g in graphs)


def _auto_why(backend: str, device: str, prec: str, bundle: Bundle, fused: bool, fmt: str) -> str:
    if backend == "torch":
        return "CUDA autocast" if prec == "fp16" else \
            "fp32 (bf16 is not validated at export: --precision bf16 for ~1.7x on bf16 CPUs)"
    if fmt == "plan":
        return ("the bundle's validated INT8 engines (explicit quantization)" if prec == "int8"
                else f"TensorRT engines built {prec}")
    if prec == "int8":
        return f"the bundle's validated INT8 graph ({_int8_note(bundle, fused, backend)})" + _int8_host_note(bundle)
    if prec == "fp16":
        return "the bundle's fp16 graph"
    if device != "cpu":
        return "the fp32 graph"
    if backend in INT8_RUNTIME and _has(_graphs(bundle, fused), "onnx", "int8"):
        return f"the fp32 graph ({_int8_refusal(_graphs(bundle, fused), backend)})"
    return "the fp32 graph (no INT8 graph: export with --int8 for ~3x on CPUs)"


def resolve_precision(backend: str, device: str, requested: str | None, bundle: Bundle, fused: bool = False,
                      only: list[str] | None = None, cpu_bf16: bool | None = None) -> tuple[str, str]:
    """(precision, why) for `backend` on `device`, from the registry's tables and the bundle's artifacts.
    Raises a clear error where the backend cannot run the requested precision or the bundle has no
    artifact for it."""
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    spec = SPECS[backend]
    supported = spec.precisions.get(device, ())
    graphs = _graphs(bundle, fused, only)
    fmt = spec.artifacts[supported[0]][0] if supported else "onnx"
    if fmt == "plan":
        # engines are built for the precisions export chose: those are what it runs
        built = [p for p in ("int8", "fp16", "fp32") if _has(graphs, "plan", p)]
        if requested == "auto":
            prec = next(iter(built), "fp16")
            return prec, _auto_why(backend, device, prec, bundle, fused, fmt)
        if requested not in built:
            got = "/".join(built) or "absent"
            raise BackendError(f"--precision {requested}: the bundle's TensorRT engines are {got}; rebuild them "
                               f"with `lenstrt export` ({spec.flags.get(requested, '--fp16')}) on this GPU")
        return requested, f"{requested} (requested)"
    if requested == "auto":
        for prec in spec.auto_order.get(device, ("fp32",)):
            f, p = spec.artifacts[prec]
            if f == "checkpoint" or (_has(graphs, f, p) and (p != "int8" or _int8_runs_on(graphs, backend))):
                return prec, _auto_why(backend, device, prec, bundle, fused, f)
        return "fp32", _auto_why(backend, device, "fp32", bundle, fused, "onnx")
    if requested not in supported:
        raise BackendError(f"--precision {requested}: the {backend} backend on {DEVICES.get(device, device)} runs "
                           f"{', '.join(supported) or 'nothing'}; choose one of those or another --backend")
    f, p = spec.artifacts[requested]
    if f != "checkpoint" and not _has(graphs, f, p):
        what = "fused graph" if fused else "members"
        raise BundleError(f"{bundle.root}: the {what} have no {requested} graph; re-export with "
                          f"{spec.flags.get(requested, '')}")
    if requested == "int8" and f == "onnx" and not _int8_runs_on(graphs, backend):
        raise BackendError(f"--precision int8 with {backend}: {_int8_refusal(graphs, backend)}; or re-export on a CPU "
                           "with VNNI or AMX (docs/export.md)")
    if requested == "bf16" and spec.bf16_needs_native and not (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
        raise BackendError(f"--precision bf16 with {backend} needs a CPU with native bf16 (AVX512_BF16 or AMX); "
                           "this one has neither: use fp32 or int8")
    return requested, f"{requested} (requested)"


def choose_backend(requested: str, caps: Capabilities, bundle: Bundle, fused: bool = False,
                   precision: str | None = None) -> tuple[str, str, str]:
    """(backend, device, why). `fused`: the fused graph will be served, so its engine is the one that counts.
    `precision`: --precision; `why` ends with the precision the backend will run and why."""
    if requested != "auto":
        choice(requested)  # an unknown name is a ConfigError listing the registry's
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
    ov = SPECS["openvino"].why_not(caps, "cpu") is None
    graphs = _graphs(bundle, fused)
    if precision in ("auto", "int8") and _has(graphs, "onnx", "int8"):
        if ov and _int8_runs_on(graphs, "openvino"):
            return "openvino", "cpu", f"OpenVINO {caps.openvino} on the CPU, INT8 graph" + tail
        if _int8_runs_on(graphs, "ort"):
            return "ort", "cpu", ("ONNX Runtime on the CPU, INT8 graph " + (
                "(OpenVINO refused it at export)" if ov else "(OpenVINO, ~15% faster, is not installed)")) + tail
    if precision == "bf16":
        if ov and caps.cpu_bf16:
            return "openvino", "cpu", f"OpenVINO {caps.openvino} on the CPU, bf16" + tail
        return "torch", "cpu", "PyTorch bf16 autocast on the CPU" + tail
    return "ort", "cpu", "ONNX Runtime on the CPU" + tail


def _engine_problem(caps: Capabilities, bundle: Bundle, fused: bool) -> str | None:
    """Why the bundle's TensorRT engines cannot run here, or None."""
    plans = [find(g, "plan", p) for g in _graphs(bundle, fused) for p in precisions(g, "plan")[:1]]
    if not plans or len(plans) < len(_graphs(bundle, fused)):
        return ("the bundle's fused graph has no TensorRT engine" if fused else
                "the bundle has no TensorRT engines") + " (exported without TensorRT)"
    try:
        for plan in plans:
            check_engine(plan or {}, caps.tensorrt, caps.gpu_name, caps.compute_capability, bundle.root)
    except BundleError as exc:
        return str(exc)
    return None


def _choose(requested: str, caps: Capabilities, bundle: Bundle, fused: bool, precision: str) -> tuple[str, str, str]:
    if requested == "auto":
        # Policy: TensorRT engines > ONNX Runtime CUDA > the CPU's best (_cpu_auto).
        problem = _engine_problem(caps, bundle, fused)
        if problem is None:
            return "trt", "cuda", f"TensorRT {caps.tensorrt} engines on {caps.gpu_name}"
        if SPECS["ort"].why_not(caps, "cuda") is None:
            return "ort", "cuda", f"ONNX Runtime CUDA on {caps.gpu_name} (no TensorRT: {problem})"
        where = "no CUDA GPU" if not caps.cuda else "no CUDA provider in onnxruntime"
        return _cpu_auto(caps, bundle, fused, precision, problem, where)
    c = choice(requested)
    spec = SPECS[c.backend]
    device = c.device or ("cuda" if "cuda" in spec.precisions and spec.why_not(caps, "cuda") is None else "cpu")
    why_not = spec.why_not(caps, device)   # "needs ...": reads on from the name
    if why_not is not None:
        raise BackendError(f"--backend {requested} {why_not}")
    if spec.artifacts[spec.precisions[device][0]][0] == "plan":  # engines must also fit this GPU
        problem = _engine_problem(caps, bundle, fused)
        if problem is not None:
            raise BackendError(f"--backend {requested}: {problem}")
    return c.backend, device, _explicit_why(c.backend, device, caps)


def _explicit_why(backend: str, device: str, caps: Capabilities) -> str:
    if backend == "trt":
        return f"TensorRT {caps.tensorrt} engines on {caps.gpu_name}"
    if backend == "openvino":
        return f"OpenVINO {caps.openvino} on the CPU"
    if backend == "torch":
        return "PyTorch eager" + (" on CUDA with fp16 autocast" if device == "cuda" else "")
    return {"cpu": "ONNX Runtime CPU", "cuda": "ONNX Runtime CUDA", "trt": "ONNX Runtime TensorRT execution provider"}[device]


def build_ensemble(bundle: Bundle, backend: str, device: str, fused: bool = False, fusion: str = "mean",
                   mc_samples: int = 0, compile: bool = False, cuda_graph_batch: int | None = None,
                   concurrency: str = "auto", threads: int | None = None, amp: bool | None = None,
                   only: list[str] | None = None, precision: str | None = None, tta: bool = False,
                   tta_above: float | None = None):
    """`backend`: a registry backend (torch, ort, openvino, trt) on `device`. `only`: serve a subset of the
    members (bench times members alone this way). `precision`: see `resolve_precision` (None/auto: the
    fastest the bundle validated; torch: `amp` decides). `tta`: scores are the mean of the 8 dihedral views
    (runtime/tta.py), on every cutout or, with `tta_above`, where the first pass reaches it."""
    ens = _build_ensemble(bundle, backend, device, fused, fusion, mc_samples, compile, cuda_graph_batch, concurrency,
                          threads, amp, only, precision)
    if not (tta or tta_above is not None):
        return ens
    from lenstrt.runtime.tta import TTAEnsemble

    return TTAEnsemble(ens, tta_above)


def _build_ensemble(bundle: Bundle, backend: str, device: str, fused: bool, fusion: str, mc_samples: int,
                    compile: bool, cuda_graph_batch: int | None, concurrency: str, threads: int | None,
                    amp: bool | None, only: list[str] | None, precision: str | None):
    from lenstrt.runtime.ensemble import Ensemble

    if backend not in SPECS:
        raise ConfigError(f"backend {backend!r}: choose one of {', '.join(SPECS)}")
    spec = SPECS[backend]
    prec, _ = resolve_precision(backend, device, precision, bundle, fused, only)
    if backend == "torch":
        if precision not in (None, "auto"):
            amp = prec != "fp32"
        # what torch really runs: autocast decides (None: fp16 on CUDA, fp32 on a CPU)
        prec = ("bf16" if device == "cpu" else "fp16") if amp or (amp is None and on_gpu(device)) else "fp32"

    members = [m for m in bundle.members if only is None or m.name in only]
    names = [m.name for m in members]
    temps = [m.temperature for m in members]
    cores = threads or os.cpu_count() or 1
    if mc_samples and backend != "torch":
        raise ConfigError("--mc-samples needs the torch backend (dropout is folded away in exported graphs)")
    if concurrency == "auto":
        # Measured on a 2-core CPU (docs/bench.md): members one after another, each with every core, beat
        # members in parallel threads (0.82-0.96x for ORT, 0.6x for torch); GPUs overlap members on streams.
        concurrency = "streams" if on_gpu(device) else "sequential"
    options = {"amp": amp, "compile": compile, "mc_samples": mc_samples}

    def make(name: str, arts: dict | None, outputs: list[str], threads_: int):
        fmt, p = spec.artifacts[prec]
        art = None
        if fmt != "checkpoint":
            art = find(arts, fmt, p)
            if art is None:
                what = "TensorRT engine" if fmt == "plan" else f"{prec} graph"
                raise BundleError(f"{bundle.root}: {name} has no {what}; re-export it"
                                  + (" on this GPU" if fmt == "plan" else f" with {spec.flags.get(prec, '')}".rstrip()))
        r = spec.make_runner(RunnerRequest(bundle, name, art, device, prec, threads_, outputs, cuda_graph_batch,
                                           options))
        r.info["precision"] = prec
        return r

    if fused:
        if not bundle.fused:
            raise BundleError(f"{bundle.root}: no fused graph; re-export with --fuse or serve with --separate")
        if not spec.fused:
            raise ConfigError(f"--fused runs the fused ONNX graph or engine; the {backend} backend cannot "
                              f"(use one of {', '.join(n for n, s in SPECS.items() if s.fused)})")
        runner = make("fused", bundle.fused["artifacts"], list(bundle.fused["outputs"]), cores)
        return Ensemble([runner], names, temps, fusion, "sequential", fused=True, device=device)
    per = max(1, cores // len(members)) if concurrency == "threads" else cores
    runners = [make(m.name, m.entry.get("artifacts"), [bundle.manifest["output"]["name"]], per) for m in members]
    return Ensemble(runners, names, temps, fusion, concurrency, mc_samples=mc_samples, device=device)
