"""`lenstrt export --int8`: the QDQ graph, what stays float, its validation gates, failure leaves nothing."""

import importlib.util

import numpy as np
import onnx
import pytest

from lenstrt.bundle import Bundle
from lenstrt.errors import BackendError, ExportError
from lenstrt.export.int8 import float_nodes, int8_gate_failure


@pytest.fixture(scope="module")
def int8_bundle(run_dir, tmp_path_factory):
    from lenstrt.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("int8") / "b"
    export_bundle([str(run_dir)], out, fuse=True, batch=(1, 16, 256), n_val=64, log=lambda *a: None, int8=True,
                  calib_n=32)
    return out


def test_int8_artifacts_agreement_and_manifest(int8_bundle):
    from lenstrt.envinfo import cpu_has_int8_dot

    b = Bundle(int8_bundle)
    assert all(r["ok"] for r in b.verify())
    assert b.manifest["exported_on"]["cpu_int8_dot"] is cpu_has_int8_dot()
    for m in b.members:
        art = m.artifact("onnx_int8")
        assert art["precision"] == "int8" and art["calibration"]["method"] == "percentile"
        assert art["calibration"]["n"] == 32 and art["calibration"]["per_channel"]
        a = m.entry["agreement"]["int8"]
        for k in ("max_abs_prob_diff", "mean_abs_prob_diff", "top100_overlap", "n"):
            assert k in a
        assert a["mean_abs_prob_diff"] <= 0.02 and a["top100_enforced"] is False  # 64 rows: too few
    fused = b.fused["artifacts"]["onnx_int8"]
    assert fused["agreement"]["mean_abs_prob_diff"] <= 0.02 and fused["nodes"]["quantize_linear"] > 0


def test_preprocessing_and_transformer_ops_stay_float(int8_bundle):
    b = Bundle(int8_bundle)
    for m in b.members:
        g = onnx.load(str(b.path(m.artifact("onnx_int8")))).graph
        assert sum(n.op_type == "QuantizeLinear" for n in g.node) > 0
        producers = {o: n for n in g.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for n in g.node:
            if n.op_type in ("TopK", "Asinh", "LayerNormalization", "Softmax"):
                src = producers.get(n.input[0])
                assert src is None or src.op_type != "DequantizeLinear", (m.name, n.op_type)
            if n.op_type == "Softmax":  # attention probabilities reach attention x V unquantized
                assert all(c.op_type != "QuantizeLinear" for c in consumers.get(n.output[0], [])), m.name
        # the graph input reaches the preprocessing unquantized
        assert not any(n.op_type == "QuantizeLinear" and n.input[0] == g.input[0].name for n in g.node)


def test_float_nodes_cover_preprocessing(int8_bundle):
    b = Bundle(int8_bundle)
    model = onnx.load(str(b.path(b.members[0].artifact("onnx"))))
    keep = set(float_nodes(model))
    ops = {n.op_type for n in model.graph.node if n.name in keep}
    assert {"TopK", "Asinh"} <= ops and "Conv" not in ops


def test_int8_runs_in_onnx_runtime_like_fp32(int8_bundle):
    from lenstrt.runtime.select import build_ensemble

    b = Bundle(int8_bundle)
    x = np.random.default_rng(0).normal(100, 10, size=(8, 3, 64, 64)).astype(np.float32)
    with build_ensemble(b, "ort", "cpu", precision="fp32") as e32, build_ensemble(b, "ort", "cpu", precision="int8") as e8:
        s32, s8 = e32.infer(x).score, e8.infer(x).score
        assert e8.info["runners"][0]["precision"] == "int8" and e32.info["runners"][0]["precision"] == "fp32"
    assert np.abs(s32 - s8).max() < 0.3


def _agree(**kw):
    base = {"n": 1000, "max_abs_prob_diff": 0.1, "mean_abs_prob_diff": 0.005, "top100_overlap": 0.98,
            "auc_reference": 0.99, "auc_drop": 0.0005}
    return {**base, **kw}


@pytest.mark.parametrize("kw,msg", [
    ({}, None),
    ({"auc_drop": 0.0035}, "AUC drop 0.0035 (tol 0.002)"),
    ({"top100_overlap": 0.9}, "top-100 overlap 0.90 (min 0.95)"),
    ({"max_abs_prob_diff": 0.6}, "max |prob diff| 6.00e-01 (tol 0.5)"),
    ({"mean_abs_prob_diff": 0.05}, "mean |prob diff| 5.00e-02 (tol 0.02)"),
    ({"top100_overlap": 0.5, "n": 150}, None),                                  # too few rows for top-100
    ({"top100_overlap": 0.5, "auc_drop": 0.01, "auc_reference": 0.6}, None),   # a model that barely ranks
])
def test_int8_gate(kw, msg):
    why = int8_gate_failure(_agree(**kw), 0.5, 0.02, 0.002, 0.95)
    if msg is None:
        assert why is None
    else:
        assert msg in why and "top-100 overlap" in why  # the figures are always named


def test_int8_failure_names_member_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    import lenstrt.models.registry as reg
    from lenstrt.export.pipeline import export_bundle

    reg._load()
    monkeypatch.setitem(reg._SPECS, "resnet18", reg.ExportSpec(mean_int8_prob=0.0))
    with pytest.raises(ExportError, match=r"member resnet18-s0: INT8 graph \(percentile calibration on .*mean \|prob diff\|") \
            as err:
        export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", n_val=16, log=lambda *a: None,
                      int8=True, calib_n=32)
    assert list(tmp_path.iterdir()) == []
    # refused on every runtime checked: each one's figures are named
    assert ("; OpenVINO: mean |prob diff|" in str(err.value)) is (importlib.util.find_spec("openvino") is not None)


def test_bad_calibration_options_are_user_errors(run_dir, tmp_path):
    from lenstrt.export.pipeline import export_bundle

    with pytest.raises(ExportError, match="--calib-method 'kl'"):
        export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", n_val=16, log=lambda *a: None,
                      int8=True, calib_method="kl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="needs OpenVINO (pip install 'lenstrt[openvino]')")
def test_openvino_runs_the_int8_graph(int8_bundle):
    from lenstrt.runtime.select import build_ensemble

    b = Bundle(int8_bundle)
    x = np.random.default_rng(1).normal(100, 10, size=(8, 3, 64, 64)).astype(np.float32)
    with build_ensemble(b, "ort", "cpu", precision="int8") as eo, \
            build_ensemble(b, "openvino", "cpu", precision="int8", fused=True) as ev:
        so, sv = eo.infer(x).score, ev.infer(x).score
        assert ev.info["runners"][0]["precision"] == "int8"
    assert np.abs(so - sv).max() < 0.3


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="needs OpenVINO (pip install 'lenstrt[openvino]')")
def test_an_int8_graph_one_runtime_refuses_is_kept_for_the_other(run_dir, tmp_path, monkeypatch):
    """ONNX Runtime's INT8 kernels moved the scores (as on an AVX2 CPU without VNNI), OpenVINO's did not: the
    graph is kept, for OpenVINO only, and serving picks it there and nowhere else."""
    import lenstrt.export.pipeline as pipe
    from lenstrt.export.pipeline import export_bundle
    from lenstrt.runtime.select import build_ensemble, resolve_precision

    real = pipe._cpu_int8_runs

    def saturating_ort(path, images):
        # OpenVINO gets ONNX Runtime's true figures (which pass here: int8_bundle); its own can differ either
        # way (this near-random model: 0.024, refused), and this test is about the verdicts, not the kernels
        good = real(path, images)["onnxruntime"]
        fused = "fused" in str(path)  # the fused graph gives probabilities, members logits
        return {"onnxruntime": np.clip(good + 0.2, 0, 1) if fused else good + 3.0, "openvino": good}

    monkeypatch.setattr(pipe, "_cpu_int8_runs", saturating_ort)
    logs: list[str] = []
    export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", fuse=True, batch=(1, 16, 256), n_val=64,
                  log=logs.append, int8=True, calib_n=32)
    b = Bundle(tmp_path / "b")
    assert all(r["ok"] for r in b.verify())
    art, fused = b.members[0].artifact("onnx", "int8"), b.fused["artifacts"]["onnx_int8"]
    for a in (art, fused):
        assert a["runtimes"] == ["openvino"] and "mean |prob diff|" in a["refused"]["onnxruntime"]
    agree = b.members[0].entry["agreement"]
    assert agree["int8"]["mean_abs_prob_diff"] > 0.02 >= agree["int8_openvino"]["mean_abs_prob_diff"]
    assert fused["agreement_openvino"]["mean_abs_prob_diff"] <= 0.02
    assert any("member resnet18-s0: INT8 graph validated for openvino only; onnxruntime refused: " in ln
               and "mean |prob diff|" in ln and "--backend openvino" in ln for ln in logs), logs
    from lenstrt.export.report import agreement_table

    rows = [ln for ln in agreement_table(b.manifest).splitlines() if "int8" in ln]
    assert len(rows) == 4  # member and fused, each runtime; the one that refused is marked
    assert sum("int8 (refused)" in ln for ln in rows) == 2 and sum("int8 OpenVINO" in ln for ln in rows) == 2
    assert not any("OpenVINO (refused)" in ln for ln in rows)
    assert resolve_precision("ort", "cpu", "auto", b)[0] == "fp32"
    with pytest.raises(BackendError, match="did not pass its gate on onnxruntime"):
        build_ensemble(b, "ort", "cpu", precision="int8")
    x = np.random.default_rng(2).normal(100, 10, size=(8, 3, 64, 64)).astype(np.float32)
    with build_ensemble(b, "openvino", "cpu") as e:
        assert e.info["runners"][0]["precision"] == "int8" and np.isfinite(e.infer(x).score).all()


# -- INT8 TensorRT engines: explicit quantization from the same QDQ graph ---------------------------------------

def _qdq_graph(zero_point: np.ndarray | None):
    """x -> QuantizeLinear -> DequantizeLinear -> y, with this zero point (None: none given)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    q_in, dq_in = ["x", "s"], ["q", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "z"))
        q_in, dq_in = q_in + ["z"], dq_in + ["z"]
    g = helper.make_graph([helper.make_node("QuantizeLinear", q_in, ["q"], name="q0"),
                           helper.make_node("DequantizeLinear", dq_in, ["y"], name="dq0")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    return helper.make_model(g)


@pytest.mark.parametrize("zero_point,problem", [
    (np.array(0, np.int8), None),
    (np.array(3, np.int8), "nonzero zero point"),
    (np.array(0, np.uint8), "type UINT8, not INT8"),
    (np.array(128, np.uint8), "type UINT8, not INT8"),
    (None, "no zero point, so its output is UINT8"),
])
def test_tensorrt_qdq_problems(zero_point, problem):
    """TensorRT's ONNX parser takes Q/DQ zero points of int8 0 only (UINT8 only at network I/O): found on the
    CPU, before a GPU build fails on it."""
    from lenstrt.export.int8 import tensorrt_qdq_problems

    got = tensorrt_qdq_problems(_qdq_graph(zero_point))
    if problem is None:
        assert got == []
    else:
        assert got and problem in got[0] and got[0].startswith("QuantizeLinear q0")


def test_cpu_int8_graph_is_uint8_and_the_tensorrt_graph_is_symmetric(int8_bundle, tmp_path):
    """The CPU graph keeps uint8 activations with zero points (what ONNX Runtime runs best on AVX2 without VNNI);
    the graph TensorRT builds, quantized from the same fp32 graph, has none and still ranks like fp32."""
    from lenstrt import checkpoint as ck
    from lenstrt.export.int8 import calibration_set, int8_from_onnx, tensorrt_qdq_problems
    from lenstrt.export.pipeline import _int8_agreement, validation_set
    from lenstrt.export.validate import run_onnx_guarded

    b = Bundle(int8_bundle)
    m = b.members[0]
    cpu = onnx.load(str(int8_bundle / m.artifact("onnx", "int8")["path"]))
    assert len(tensorrt_qdq_problems(cpu)) > 10
    c = ck.load(int8_bundle / m.entry["checkpoint"]["path"])
    calib, _ = calibration_set(c, None, 32)
    src = int8_bundle / m.artifact("onnx", "fp32")["path"]
    info = int8_from_onnx(src, tmp_path / "t.onnx", calib, symmetric=True)
    assert info["calibration"]["activations"] == "int8 symmetric"
    assert tensorrt_qdq_problems(onnx.load(str(tmp_path / "t.onnx"))) == []
    images, labels, _ = validation_set(c, None, 64)
    ref = run_onnx_guarded(src, images, "disable")[0][:, 0]
    got = run_onnx_guarded(tmp_path / "t.onnx", images, "disable")[0][:, 0]  # emulated, as TensorRT computes it
    a = _int8_agreement(ref.astype(np.float64), got.astype(np.float64), float(c["temperature"]), labels)
    assert a["mean_abs_prob_diff"] < 0.02, a


def test_u8u8_graph_has_uint8_weights_and_onnx_runtime_computes_it_as_emulated(int8_bundle, tmp_path):
    """The U8U8 graph measured for CPUs without VNNI (benchmarks/int8_formats.py): its weights are uint8, and
    ONNX Runtime's integer kernels give what its float emulation gives (no saturation), on any CPU."""
    from onnx import TensorProto

    from lenstrt import checkpoint as ck
    from lenstrt.export.int8 import calibration_set, int8_from_onnx
    from lenstrt.export.pipeline import validation_set
    from lenstrt.export.validate import run_onnx_guarded

    m = Bundle(int8_bundle).members[0]
    c = ck.load(int8_bundle / m.entry["checkpoint"]["path"])
    calib, _ = calibration_set(c, None, 32)
    src = int8_bundle / m.artifact("onnx", "fp32")["path"]
    info = int8_from_onnx(src, tmp_path / "u.onnx", calib, unsigned_weights=True)
    assert info["calibration"]["weights"] == "uint8 symmetric per channel"
    q = onnx.load(str(tmp_path / "u.onnx"))
    weights = [i for i in q.graph.initializer if len(i.dims) == 4]
    assert weights and all(i.data_type == TensorProto.UINT8 for i in weights)
    images, _, _ = validation_set(c, None, 64)
    kernels = run_onnx_guarded(tmp_path / "u.onnx", images, "all")[0][:, 0]
    emulated = run_onnx_guarded(tmp_path / "u.onnx", images, "disable")[0][:, 0]
    assert np.max(np.abs(kernels - emulated)) < 0.05, np.max(np.abs(kernels - emulated))


@pytest.mark.parametrize("version,cc,problem", [
    ("10.13.0.35", "9.0", None), ("11.4.0", "8.9", None), ("10.0.1", "7.5", None),
    ("8.6.1", "9.0", "need TensorRT >= 10"), ("10.13.0.35", "7.0", "no INT8 tensor cores"),
    ("10.13.0.35", "6.1", "no INT8 tensor cores"),
])
def test_int8_engine_decision(version, cc, problem):
    from lenstrt.export import tensorrt as trtx

    got = trtx.int8_problem(version, cc)
    assert (got is None) if problem is None else (problem in got)
    assert trtx.source_graph_for("int8") == "int8-symmetric" and trtx.source_graph_for("fp16") == "fp16"
    with pytest.raises(ExportError, match="not 'int4'"):
        trtx.source_graph_for("int4")


def test_export_builds_int8_engine_from_the_qdq_graph(run_dir, tmp_path, monkeypatch):
    """TensorRT faked as in test_gpu_logic: 'building' copies the graph after checking what TensorRT's ONNX
    parser would refuse in it, ONNX Runtime 'runs' it with its QDQ pairs emulated in float (no fused integer
    kernels: TensorRT's INT8 products accumulate in int32 and do not saturate like an AVX2 CPU's)."""
    import shutil

    import onnx

    import lenstrt.export.pipeline as pipe
    from lenstrt.export import tensorrt as trtx
    from lenstrt.export.int8 import tensorrt_qdq_problems
    from lenstrt.export.pipeline import export_bundle
    from lenstrt.runtime.ort import OrtRunner
    from lenstrt.runtime.select import resolve_precision

    plan = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
    built = []

    def build(tmp, src_rel, rel_plan, input_name, chw, batch, fp16, log):
        assert tensorrt_qdq_problems(onnx.load(str(tmp / src_rel))) == []
        shutil.copyfile(tmp / src_rel, tmp / rel_plan)
        built.append((src_rel, rel_plan))
        return {"source_graph": trtx.source_graph(fp16), "precision": "fp16" if fp16 else "fp32", **plan,
                "build": {"strongly_typed": True}}

    def run(p, entry, images, outputs):
        with OrtRunner("engine", p, "cpu", "disable", output_names=outputs) as r:
            return r.infer(images)

    monkeypatch.setattr(trtx, "status", lambda: (True, "TensorRT (fake)"))
    monkeypatch.setattr(pipe, "_build_engine", build)
    monkeypatch.setattr(pipe, "_run_engine", run)
    m = export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", n_val=32, log=lambda *a: None,
                      int8=True, calib_n=32)
    assert built == [("resnet18-s0.onnx", "resnet18-s0.plan"), ("resnet18-s0.int8.trt.onnx", "resnet18-s0.int8.plan")]
    arts = m["members"][0]["artifacts"]
    p8 = arts["plan_int8"]
    assert p8["precision"] == "int8" and p8["source_graph"] == "int8-symmetric" and p8["build"]["strongly_typed"]
    # the engine's graph is in the bundle, hashed, and no CPU runtime picks it: the CPU graph stays uint8
    assert arts["onnx_int8_trt"]["format"] == "onnx-trt" and arts["onnx_int8_trt"]["calibration"]["activations"] == \
        "int8 symmetric"
    assert Bundle(tmp_path / "b").members[0].artifact("onnx", "int8")["path"] == "resnet18-s0.int8.onnx"
    assert tensorrt_qdq_problems(onnx.load(str(tmp_path / "b" / "resnet18-s0.int8.onnx")))
    assert m["members"][0]["agreement"]["engine_int8"]["n"] == 32
    assert [e["path"] for e in m["engines"]] == ["resnet18-s0.plan", "resnet18-s0.int8.plan"]
    assert resolve_precision("trt", "cuda", "auto", Bundle(tmp_path / "b"))[0] == "int8"


@pytest.mark.parametrize("vnni,emulated_shift,says", [
    (False, 0.0, "the quantization itself holds"),  # AVX2 without VNNI: the kernels, not the graph
    (False, 0.3, "try --calib-method"),  # the graph itself is off: calibration is the remedy
    (True, 0.0, "try --calib-method"),  # VNNI CPUs do not saturate: nothing to blame but the graph
])
def test_refused_int8_graph_names_the_cause(vnni, emulated_shift, says, monkeypatch, tmp_path):
    import lenstrt.envinfo as envinfo
    import lenstrt.export.pipeline as pipe
    from lenstrt.models import export_spec

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, 400)
    labels = (ref + rng.normal(0, 1, 400) > 0).astype(np.int64)
    monkeypatch.setattr(envinfo, "cpu_has_int8_dot", lambda: vnni)
    monkeypatch.setattr(pipe, "run_onnx_guarded",
                        lambda path, images, level: [(ref + emulated_shift * rng.normal(0, 3, 400))[:, None]])
    got = pipe._int8_remedy(tmp_path / "m.int8.onnx", None, ref, 1.0, labels, export_spec("resnet18"))
    assert says in got
    if "holds" in got:
        assert "mean |prob diff| 0.00e+00" in got and "VNNI" in got


@pytest.mark.parametrize("exported_vnni,here_vnni,warns", [(True, False, True), (True, True, False),
                                                           (False, False, False), (None, False, False)])
def test_serving_int8_warns_on_a_cpu_without_the_exporters_vnni(int8_bundle, exported_vnni, here_vnni, warns,
                                                               monkeypatch):
    import lenstrt.envinfo as envinfo
    from lenstrt.runtime.select import resolve_precision

    b = Bundle(int8_bundle)
    if exported_vnni is None:  # bundles from before 2026-11-30 record no exporting host: nothing to compare
        b.manifest.pop("exported_on")
    else:
        b.manifest["exported_on"]["cpu_int8_dot"] = exported_vnni
    monkeypatch.setattr(envinfo, "cpu_has_int8_dot", lambda: here_vnni)
    prec, why = resolve_precision("ort", "cpu", "auto", b)
    assert prec == "int8" and ("warning: validated on a CPU with VNNI" in why) is warns
