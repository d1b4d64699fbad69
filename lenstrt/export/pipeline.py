"""`lenstrt export`: checkpoints -> a validated bundle (ONNX, fp16 ONNX, TensorRT engines, manifest).

The bundle is assembled in a temporary directory beside the target and renamed into place only when
every artifact has passed validation: a failed export leaves no half-written bundle.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import __version__
from lenstrt import checkpoint as ck
from lenstrt.bundle import MANIFEST, SCHEMA, kind
from lenstrt.envinfo import host
from lenstrt.errors import ExportError
from lenstrt.export.tolerances import gate, tolerances
from lenstrt.export.validate import agreement, run_onnx_guarded, within
from lenstrt.io import sha256_file, write_json
from lenstrt.runtime.select import INT8_RUNTIME_BACKEND as CPU_INT8_RUNTIMES  # manifest runtime -> --backend

FP32_LEVEL, FP16_LEVEL = "all", "extended"  # ORT_ENABLE_ALL crashed on an fp16 ViT graph (docs/export.md)


def _art(root: Path, rel: str, fmt: str, precision: str, **extra: Any) -> dict[str, Any]:
    """A manifest artifact entry: the file (path, sha256, bytes) and what it is (format, precision), so
    runtimes find it by (format, precision) and never by its key (bundle.find)."""
    return {"path": rel, "sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size, "format": fmt,
            "precision": precision, **extra}


def validation_set(ckpt: dict[str, Any], data: list[str] | None, n: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    from lenstrt.data.samples import sample_cutouts

    return sample_cutouts(data, n, ckpt.get("survey"), len(ckpt["bands"]), ckpt["image_size"], seed=20260101)


# The AUC-drop gate guards a working classifier. For a model that barely ranks (reference AUC below
# this), its scores sit within fp16 rounding of each other and the AUC "drop" is rank noise: recorded,
# not enforced.
AUC_GATE_MIN_REFERENCE = 0.9


def auc_drop_fails(agreement_fp16: dict[str, Any], max_drop: float) -> bool:
    if "auc_drop" not in agreement_fp16:
        return False
    enforced = agreement_fp16["auc_reference"] >= AUC_GATE_MIN_REFERENCE
    agreement_fp16["auc_drop_enforced"] = enforced
    return enforced and agreement_fp16["auc_drop"] > max_drop


def gate_failure(agree: dict[str, Any], atol_prob: float, max_auc_drop: float) -> str | None:
    """Why a reduced-precision artifact (fp16 graph, TensorRT engine) fails against its fp32 reference, or
    None: probabilities within `atol_prob` everywhere and, for a working classifier, AUC kept."""
    if agree["max_abs_prob_diff"] > atol_prob or auc_drop_fails(agree, max_auc_drop):
        return (f"max |prob diff| {agree['max_abs_prob_diff']:.2e} (tol {atol_prob}), AUC drop "
                f"{agree.get('auc_drop', 0):.4f} (tol {max_auc_drop})")
    return None


def _run_engine(plan: Path, entry: dict[str, Any], images: np.ndarray, outputs: list[str]) -> Any:
    """The engine's outputs on the validation cutouts, through the runtime's own TensorRT Runner."""
    from lenstrt.runtime.trt import TrtRunner

    with TrtRunner(f"validate:{plan.name}", plan, {"path": plan.name, **entry}, output_names=outputs) as r:
        return r.infer(images)


def _build_engine(tmp: Path, src_rel: str, rel_plan: str, input_name: str, chw: tuple[int, int, int], batch,
                  fp16: bool, log):
    from lenstrt.export import tensorrt as trtx

    info = trtx.build_engine(tmp / src_rel, tmp / rel_plan, input_name, chw, trtx.BuildOptions(*batch), log=log)
    return {"source_graph": trtx.source_graph(fp16), "precision": "fp16" if fp16 else "fp32", **info}


def export_bundle(checkpoints: list[str], out: str | Path, fp16: bool = False, fuse: bool = False,
                  batch: tuple[int, int, int] = (1, 64, 1024), triton: str | None = None, require_trt: bool = False,
                  data: list[str] | None = None, n_val: int = 256, log=print, int8: bool = False,
                  calib_data: list[str] | None = None, calib_n: int = 256,
                  calib_method: str = "percentile") -> dict[str, Any]:
    """`int8`: also write an INT8 QDQ graph per member (and for the fused graph), calibrated on `calib_n`
    cutouts of `calib_data` (default: simulated for the checkpoint's survey) with `calib_method`."""
    import torch

    from lenstrt.export import tensorrt as trtx
    from lenstrt.export.fp16 import fp16_from_onnx, precision_summary
    from lenstrt.export.onnx import onnx_from_module
    from lenstrt.models import export_spec
    from lenstrt.train.trainer import predict_logits

    if not (1 <= batch[0] <= batch[1] <= batch[2]):
        raise ExportError(f"--batch {batch}: need MIN <= OPT <= MAX, all >= 1")
    paths = [p for c in checkpoints for p in ck.resolve(c)]
    ckpts = [ck.load(p) for p in paths]
    first = ckpts[0]
    for p, c in zip(paths, ckpts):
        if c["bands"] != first["bands"] or c["image_size"] != first["image_size"] or c["preprocess"] != first["preprocess"]:
            raise ExportError(f"{p}: bands/size/preprocessing differ from {paths[0]}; one bundle serves one input spec")
    can_trt, trt_why = trtx.status()
    if can_trt and (too_big := trtx.topk_problem(first["image_size"], int(first["preprocess"].get("frame", 4)))):
        can_trt, trt_why = False, too_big
    if require_trt and not can_trt:
        raise ExportError(f"--require-trt: cannot build TensorRT engines here: {trt_why}")
    calib, calib_desc = _calibration(first, int8, calib_data, calib_n, calib_method)
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    images, labels, val_desc = validation_set(first, data, n_val)
    c_, h_, w_ = images.shape[1:]
    example = torch.from_numpy(images[:2])
    names = ck.member_names(paths)
    members, models, engines = [], [], []
    try:
        for name, p, c in zip(names, paths, ckpts):
            t0 = time.perf_counter()
            spec = export_spec(c["arch"])
            tols = tolerances(spec)
            rel_ck = f"checkpoints/{name}.pt"
            shutil.copyfile(p, tmp / rel_ck)
            model = ck.build_model(c)
            models.append(model)
            T = float(c["temperature"])
            ref = predict_logits(model, images, "cpu")
            arts: dict[str, Any] = {}
            agree: dict[str, Any] = {}
            rel = f"{name}.onnx"
            onnx_from_module(model, example, tmp / rel, spec.input_name, [spec.output_name], spec.opset, batch[2])
            got = run_onnx_guarded(tmp / rel, images, FP32_LEVEL)[0][:, 0]
            agree["fp32"] = agreement(ref, got, T, labels)
            t32 = tols["fp32"]
            if not within(ref, got, t32.atol_logit or 0.0, t32.rtol_logit or 0.0):
                raise ExportError(f"member {name}: fp32 ONNX max |logit diff| {agree['fp32']['max_abs_logit_diff']:.2e} "
                                  f"exceeds {t32.atol_logit:.0e} + {t32.rtol_logit:.0e} x |logit| on {val_desc}")
            arts["onnx"] = _art(tmp, rel, "onnx", "fp32", opset=spec.opset, ort_opt_level=FP32_LEVEL)
            if fp16:
                rel16 = f"{name}.fp16.onnx"
                fp16_from_onnx(tmp / rel, tmp / rel16, spec.fp32_ops)
                got16 = run_onnx_guarded(tmp / rel16, images, FP16_LEVEL)[0][:, 0]
                a16 = agreement(ref, got16, T, labels)
                agree["fp16"] = a16
                why = gate(a16, tols["fp16"])
                if why:
                    raise ExportError(f"member {name}: fp16 graph {why} on {val_desc}")
                arts["onnx_fp16"] = _art(tmp, rel16, "onnx", "fp16", io="fp32", opset=spec.opset,
                                         ort_opt_level=FP16_LEVEL, nodes=precision_summary(tmp / rel16))
            if int8:
                arts["onnx_int8"], by_rt = _int8_member(tmp, name, rel, spec, calib, calib_desc, calib_method,
                                                        images, ref, T, labels, val_desc, log)
                # "int8": ONNX Runtime's figures, as bundles before per-runtime gates recorded them
                agree["int8"] = by_rt["onnxruntime"]
                agree.update({f"int8_{rt}": a for rt, a in by_rt.items() if rt != "onnxruntime"})
            if can_trt:
                rel_plan = f"{name}.plan"
                info = _build_engine(tmp, rel16 if fp16 else rel, rel_plan, spec.input_name, (c_, h_, w_), batch, fp16,
                                     log)
                # Every engine is checked like every graph: against the PyTorch fp32 reference (Polygraphy's habit).
                got_e = _run_engine(tmp / rel_plan, info, images, [spec.output_name])
                agree["engine"] = agreement(ref, np.asarray(got_e, np.float64), T, labels)
                why = gate(agree["engine"], tols["fp16"])  # fp16 engines, and fp32 ones on TensorRT < 10.12
                if why:
                    raise ExportError(f"member {name}: TensorRT {info['precision']} engine {why} on {val_desc}")
                arts["plan"] = _art(tmp, rel_plan, "plan", agreement=agree["engine"], **info)
                engines.append({"member": name, **arts["plan"]})
                if int8:
                    got8 = _int8_engine(tmp, name, rel, spec, calib, calib_method, (c_, h_, w_), batch, images, ref, T,
                                        labels, val_desc, log)
                    if got8:
                        arts["onnx_int8_trt"], arts["plan_int8"], agree["engine_int8"] = got8
                        engines.append({"member": name, **arts["plan_int8"]})
            members.append({
                "name": name, "arch": c["arch"], "arch_kwargs": c["arch_kwargs"], "temperature": T,
                "train_lens_fraction": c.get("train_lens_fraction", 0.5), "seed": c.get("seed"),
                "metrics": c.get("metrics", {}), "source_checkpoint": str(p),
                "checkpoint": _art(tmp, rel_ck, "checkpoint", "fp32"), "artifacts": arts, "agreement": agree,
                # the gates this member's artifacts passed, by precision
                "tolerances": {p: tols[p].as_dict() for p in sorted({kind(k, e)[1] for k, e in arts.items()})},
                "export_time_s": round(time.perf_counter() - t0, 2),
            })
            log(f"{name}: fp32 max|Δlogit| {agree['fp32']['max_abs_logit_diff']:.1e}"
                + (f", fp16 max|Δp| {agree['fp16']['max_abs_prob_diff']:.1e}" if fp16 else "")
                + (_int8_summary(arts["onnx_int8"], agree) if int8 else "")
                + (", engine built" if "plan" in arts else "") + f" [{time.perf_counter() - t0:.1f} s]")
        fused = _fused(models, members, tmp, example, images, labels, fp16, batch, val_desc, can_trt, log) \
            if fuse else None
        if fused and int8:
            _int8_fused(fused, members, tmp, calib, calib_desc, calib_method, images, labels, val_desc, log)
        if fused and "plan" in fused["artifacts"]:
            engines.append({"member": "fused", **fused["artifacts"]["plan"]})
        manifest = {
            "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lenstrt_version": __version__, "torch_version": str(torch.__version__),
            "input": {"name": export_spec(first["arch"]).input_name, "shape": [-1, c_, h_, w_], "dtype": "float32",
                      "bands": first["bands"], "image_size": first["image_size"], "survey": first.get("survey"),
                      "pixel_scale": first.get("pixel_scale")},
            "output": {"name": "logits", "shape": [-1, 1],
                       "meaning": "logit; calibrated lens probability = sigmoid(logit / member.temperature)"},
            "preprocess": first["preprocess"], "batch": {"min": batch[0], "opt": batch[1], "max": batch[2]},
            "validation_data": val_desc, "members": members, "fused": fused,
            # where the gates ran: an INT8 graph validated on a VNNI CPU can move scores more on one without
            "exported_on": host("cpu"),
            "tensorrt": {"built": can_trt, "why": None if can_trt else trt_why}, "engines": engines,
        }
        write_json(tmp / MANIFEST, manifest)
        if out.exists():
            old = out.parent / f".{out.name}.old{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not can_trt:
        log(f"TensorRT engines skipped: {trt_why}; the bundle has ONNX only")
    if triton:
        from lenstrt.export.triton import write_repository

        write_repository(out, triton, gpu=True)
        log(f"Triton model repository: {triton}")
    return manifest


def _calibration(ckpt: dict[str, Any], int8: bool, data: list[str] | None, n: int,
                 method: str) -> tuple[np.ndarray | None, str | None]:
    if not int8:
        return None, None
    from lenstrt.export.int8 import METHODS, calibration_set

    if method not in METHODS:
        raise ExportError(f"--calib-method {method!r}: choose one of {', '.join(METHODS)}")
    if n < 1:
        raise ExportError(f"--calib-n {n}: need at least one calibration cutout")
    return calibration_set(ckpt, data, n)


def _int8_agreement(ref_logits: np.ndarray, logits: np.ndarray, T: float, labels) -> dict[str, Any]:
    from lenstrt.bench.stats import top_k_overlap
    from lenstrt.metrics import sigmoid

    a = agreement(ref_logits, logits, T, labels)
    a["top100_overlap"] = top_k_overlap(sigmoid(ref_logits / T), sigmoid(logits / T), 100)
    return a




def _cpu_int8_runs(path: Path, images) -> dict[str, np.ndarray]:
    """The INT8 graph's first output on each CPU runtime installed: their INT8 kernels differ (on a CPU
    without VNNI, ONNX Runtime's saturate where OpenVINO's do not: docs/export.md), so each is gated alone."""
    from lenstrt.export.validate import run_openvino

    runs = {"onnxruntime": run_onnx_guarded(path, images, FP32_LEVEL)[0][:, 0]}
    ov = run_openvino(path, images)
    if ov is not None:
        runs["openvino"] = np.asarray(ov, np.float64)
    return runs


def _runtime_verdicts(name: str, agree: dict[str, dict[str, Any]], refused: dict[str, str], log) -> dict[str, Any]:
    """The artifact's `runtimes` (those whose gate it passed) and `refused` (the others, with why); a log
    line where one runtime refused what another validated."""
    ok = [rt for rt in agree if rt not in refused]
    if ok and refused:
        log(f"{name}: INT8 graph validated for {', '.join(ok)} only; "
            + "; ".join(f"{rt} refused: {why}" for rt, why in refused.items())
            + f" (serve it with --backend {CPU_INT8_RUNTIMES[ok[0]]}; auto picks it)")
    return {"runtimes": ok, **({"refused": refused} if refused else {})}


def _int8_summary(art: dict[str, Any], agree: dict[str, Any]) -> str:
    """The member's log figures for its INT8 graph, from the first runtime that validated it."""
    rt = art["runtimes"][0]
    a = agree["int8"] if rt == "onnxruntime" else agree[f"int8_{rt}"]
    return f", int8 ({rt}) AUC drop {a.get('auc_drop', 0):+.4f} top-100 {a['top100_overlap']:.2f}"


def _int8_member(tmp: Path, name: str, rel: str, spec, calib, calib_desc, method: str, images, ref, T: float,
                 labels, val_desc: str, log=print) -> tuple[dict[str, Any], dict[str, Any]]:
    """The member's INT8 QDQ graph from its fp32 graph, validated against the PyTorch fp32 reference on
    every CPU runtime installed; kept where one of them passes (the artifact's `runtimes`). Returns the
    artifact and the agreement per runtime."""
    from lenstrt.export.int8 import int8_from_onnx

    rel8 = f"{name}.int8.onnx"
    info = int8_from_onnx(tmp / rel, tmp / rel8, calib, method, spec.int8_float_ops)
    agree, refused = {}, {}
    for rt, got in _cpu_int8_runs(tmp / rel8, images).items():
        agree[rt] = _int8_agreement(ref, got, T, labels)
        if why := gate(agree[rt], tolerances(spec)["int8"]):
            refused[rt] = why
    verdicts = _runtime_verdicts(f"member {name}", agree, refused, log)
    if not verdicts["runtimes"]:
        ov = f"; OpenVINO: {refused['openvino']}" if "openvino" in refused else ""
        raise ExportError(f"member {name}: INT8 graph ({method} calibration on {calib_desc}) {refused['onnxruntime']} "
                          f"on {val_desc}{ov}; " + _int8_remedy(tmp / rel8, images, ref, T, labels, spec))
    return _art(tmp, rel8, "onnx", "int8", opset=spec.opset, ort_opt_level=FP32_LEVEL, **verdicts, **info), agree


def _int8_remedy(path: Path, images, ref, T: float, labels, spec) -> str:
    """What to do about a refused INT8 graph. Run with its Q/DQ pairs emulated in float (exact integer
    products, as TensorRT and VNNI CPUs compute them), it shows whether the quantization or this CPU's
    INT8 kernels lost the agreement."""
    from lenstrt.envinfo import cpu_has_int8_dot

    retry = "try --calib-method or more --calib-n, or export without --int8"
    if cpu_has_int8_dot():
        return retry
    emulated = _int8_agreement(ref, run_onnx_guarded(path, images, "disable")[0][:, 0], T, labels)
    if gate(emulated, tolerances(spec)["int8"]):
        return retry
    return (f"the quantization itself holds (emulated exactly: mean |prob diff| {emulated['mean_abs_prob_diff']:.2e}, "
            f"max {emulated['max_abs_prob_diff']:.2e}), this CPU's INT8 kernels do not (no VNNI: products saturate, "
            "docs/export.md); export with --int8 on a CPU with VNNI or AMX, or without --int8 here")


def _int8_engine(tmp: Path, name: str, rel: str, spec, calib, method: str, chw, batch, images, ref, T: float, labels,
                 val_desc: str, log) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """The member's INT8 TensorRT engine, built strongly typed from a QDQ graph of its own (explicit
    quantization, symmetric: what TensorRT's parser takes) and gated like the CPU's INT8 graph; None (and a
    log line) where this TensorRT or GPU cannot build one. Returns (that graph's entry, the engine's, agreement)."""
    from lenstrt.export import tensorrt as trtx
    from lenstrt.export.int8 import int8_from_onnx

    try:
        fp = trtx.gpu_fingerprint()
        problem = trtx.int8_problem(fp["tensorrt_version"], fp["compute_capability"])
    except (ImportError, AttributeError):  # TensorRT faked in tests: no fingerprint to check
        problem = None
    if problem:
        log(f"{name}: INT8 TensorRT engine skipped: {problem}")
        return None
    rel_plan, rel_src = f"{name}.int8.plan", f"{name}.int8.trt.onnx"
    qinfo = int8_from_onnx(tmp / rel, tmp / rel_src, calib, method, spec.int8_float_ops, symmetric=True)
    info = _build_engine(tmp, rel_src, rel_plan, spec.input_name, chw, batch, False, log)
    info.update(source_graph=trtx.source_graph_for("int8"), precision="int8")
    got = _run_engine(tmp / rel_plan, info, images, [spec.output_name])
    agree = _int8_agreement(ref, np.asarray(got, np.float64), T, labels)
    why = gate(agree, tolerances(spec)["int8"])
    if why:
        raise ExportError(f"member {name}: TensorRT INT8 engine {why} on {val_desc}")
    # format onnx-trt: no CPU runtime picks it (bundle.find asks for "onnx"); kept as the engine's source
    return (_art(tmp, rel_src, "onnx-trt", "int8", opset=spec.opset, **qinfo),
            _art(tmp, rel_plan, "plan", agreement=agree, **info), agree)


def _int8_fused(fused: dict[str, Any], members, tmp: Path, calib, calib_desc, method: str, images, labels,
                val_desc: str, log=print) -> None:
    """The fused graph's INT8 version, gated on its score against the members' fp32 mean (as the fused fp16
    graph), on every CPU runtime installed as the members' graphs are."""
    from lenstrt.bench.stats import top_k_overlap
    from lenstrt.export.int8 import int8_from_onnx
    from lenstrt.models import export_spec

    extra = tuple({op for m in members for op in export_spec(m["arch"]).int8_float_ops})
    info = int8_from_onnx(tmp / "ensemble.fused.onnx", tmp / "ensemble.fused.int8.onnx", calib, method, extra)
    ref = run_onnx_guarded(tmp / "ensemble.fused.onnx", images, FP32_LEVEL)[0][:, 0]
    agree, refused = {}, {}
    for rt, got in _cpu_int8_runs(tmp / "ensemble.fused.int8.onnx", images).items():
        a: dict[str, Any] = {"n": int(len(ref)), "max_abs_prob_diff": float(np.abs(got - ref).max()),
                             "mean_abs_prob_diff": float(np.abs(got - ref).mean()),
                             "top100_overlap": top_k_overlap(ref, got, 100)}
        if labels is not None and 0 < labels.sum() < len(labels):
            from lenstrt.metrics import roc_auc

            a["auc_reference"], a["auc"] = roc_auc(labels, ref), roc_auc(labels, got)
            a["auc_drop"] = a["auc_reference"] - a["auc"]
        agree[rt] = a
        # the members' INT8 graphs carry the AUC and top-100 gates; the fused one must match them in the mean
        if a["mean_abs_prob_diff"] > FUSED_MEAN_INT8:
            refused[rt] = (f"mean |prob diff| {a['mean_abs_prob_diff']:.2e} > {FUSED_MEAN_INT8} (max "
                           f"{a['max_abs_prob_diff']:.2e}, top-100 overlap {a['top100_overlap']:.2f})")
    verdicts = _runtime_verdicts("fused", agree, refused, log)
    if not verdicts["runtimes"]:
        raise ExportError(f"fused INT8 graph: {refused['onnxruntime']} on {val_desc}"
                          + (f"; OpenVINO: {refused['openvino']}" if "openvino" in refused else ""))
    fused["artifacts"]["onnx_int8"] = _art(tmp, "ensemble.fused.int8.onnx", "onnx", "int8", ort_opt_level=FP32_LEVEL,
                                           agreement=agree["onnxruntime"], **verdicts,
                                           **({"agreement_openvino": agree["openvino"]} if "openvino" in agree else {}),
                                           **info)


FUSED_MEAN_INT8 = 0.02

FUSED_ATOL_FP32, FUSED_ATOL_REDUCED = 1e-4, 1e-2


def _fused(models, members, tmp: Path, example, images, labels, fp16: bool, batch, val_desc, can_trt: bool = False,
           log=print) -> dict[str, Any]:
    import torch

    from lenstrt.export.fp16 import fp16_from_onnx
    from lenstrt.export.fuse import FUSED_OUTPUTS, FusedEnsemble
    from lenstrt.export.onnx import onnx_from_module

    fused = FusedEnsemble(models, [m["temperature"] for m in members]).eval()
    ref_members = []
    with torch.inference_mode():
        for i in range(0, len(images), 256):
            ref_members.append(fused(torch.from_numpy(images[i:i + 256]))[2].numpy())
    ref = np.concatenate(ref_members).mean(1)
    arts, agree = {}, {}
    onnx_from_module(fused, example, tmp / "ensemble.fused.onnx", "images", FUSED_OUTPUTS, 18, batch[2])
    got = run_onnx_guarded(tmp / "ensemble.fused.onnx", images, FP32_LEVEL)[0][:, 0]
    agree["fp32"] = {"max_abs_prob_diff": float(np.abs(got - ref).max())}
    if agree["fp32"]["max_abs_prob_diff"] > FUSED_ATOL_FP32:
        raise ExportError(f"fused graph: max |prob diff| {agree['fp32']['max_abs_prob_diff']:.2e} > {FUSED_ATOL_FP32} "
                          f"on {val_desc}")
    arts["onnx"] = _art(tmp, "ensemble.fused.onnx", "onnx", "fp32", ort_opt_level=FP32_LEVEL)
    if fp16:
        fp16_from_onnx(tmp / "ensemble.fused.onnx", tmp / "ensemble.fused.fp16.onnx",
                       tuple({op for m in members for op in _spec_ops(m["arch"])}))
        got16 = run_onnx_guarded(tmp / "ensemble.fused.fp16.onnx", images, FP16_LEVEL)[0][:, 0]
        agree["fp16"] = {"max_abs_prob_diff": float(np.abs(got16 - ref).max())}
        if agree["fp16"]["max_abs_prob_diff"] > FUSED_ATOL_REDUCED:
            raise ExportError(f"fused fp16 graph: max |prob diff| {agree['fp16']['max_abs_prob_diff']:.2e} "
                              f"> {FUSED_ATOL_REDUCED}")
        arts["onnx_fp16"] = _art(tmp, "ensemble.fused.fp16.onnx", "onnx", "fp16", io="fp32",
                                 ort_opt_level=FP16_LEVEL)
    if can_trt:
        # The fused graph gets its engine too: `serve --fused`, the `trt fused` bench rows and Triton's
        # fused model need it.
        src = "ensemble.fused.fp16.onnx" if fp16 else "ensemble.fused.onnx"
        info = _build_engine(tmp, src, "ensemble.fused.plan", "images", tuple(images.shape[1:]), batch, fp16, log)
        score = _run_engine(tmp / "ensemble.fused.plan", info, images, list(FUSED_OUTPUTS))[0]
        agree["engine"] = {"max_abs_prob_diff": float(np.abs(np.asarray(score, np.float64) - ref).max())}
        if agree["engine"]["max_abs_prob_diff"] > FUSED_ATOL_REDUCED:
            raise ExportError(f"fused TensorRT engine: max |prob diff| {agree['engine']['max_abs_prob_diff']:.2e} "
                              f"> {FUSED_ATOL_REDUCED} on {val_desc}")
        arts["plan"] = _art(tmp, "ensemble.fused.plan", "plan", agreement=agree["engine"], **info)
    return {"members": [m["name"] for m in members], "outputs": FUSED_OUTPUTS, "fusion": "mean",
            "artifacts": arts, "agreement": agree}


def _spec_ops(arch: str) -> tuple[str, ...]:
    from lenstrt.models import export_spec

    return export_spec(arch).fp32_ops
