import importlib.machinery
import json
import signal
import sys

import numpy as np
import onnx
import pytest

from lenstrt.bundle import Bundle, check_engine
from lenstrt.errors import BundleError, ExportError
from lenstrt.export import tensorrt as trtx
from lenstrt.export.validate import run_onnx_guarded


def test_bundle_manifest_and_artifacts(bundle_dir):
    b = Bundle(bundle_dir)
    assert all(r["ok"] for r in b.verify())  # every sha256 matches
    m = b.manifest
    assert m["schema"] == "lenstrt-bundle/2" and [x.name for x in b.members] == ["resnet18-s0", "vit_tiny-s1000"]
    assert m["input"] == {"name": "images", "shape": [-1, 3, 64, 64], "dtype": "float32", "bands": ["g", "r", "i"],
                          "image_size": 64, "survey": "lsst-gri", "pixel_scale": 0.2}
    assert m["tensorrt"]["built"] is False and "TensorRT" in m["tensorrt"]["why"]
    for mem in b.members:
        arts = mem.entry["artifacts"]
        assert set(arts) == {"onnx", "onnx_fp16"} and arts["onnx"]["opset"] >= 18
        # precision as data: each artifact says what it is, each member the gates it passed
        assert [(e["format"], e["precision"]) for e in arts.values()] == [("onnx", "fp32"), ("onnx", "fp16")]
        assert mem.tolerances["fp32"] == {"atol_logit": 1e-4, "rtol_logit": 1e-5}
        a = mem.entry["agreement"]
        assert a["fp32"]["max_abs_logit_diff"] <= 1e-4 + 1e-5 * a["fp32"]["max_abs_ref_logit"]
        assert a["fp16"]["max_abs_prob_diff"] <= 1e-2
        assert a["fp16"]["auc_drop"] <= 0.002 or not a["fp16"]["auc_drop_enforced"]
        assert (bundle_dir / mem.entry["checkpoint"]["path"]).is_file()


def test_onnx_graphs_are_valid_dynamic_and_mixed_precision(bundle_dir):
    b = Bundle(bundle_dir)
    for mem in b.members:
        fp32 = onnx.load(str(b.path(mem.artifact("onnx"))))
        onnx.checker.check_model(fp32, full_check=True)
        assert not any(i.name.endswith(".data") for i in fp32.graph.initializer)  # self-contained
        dim0 = fp32.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.dim_value  # dynamic batch
        fp16 = onnx.load(str(b.path(mem.artifact("onnx_fp16"))))
        f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
        assert fp16.graph.input[0].type.tensor_type.elem_type == f32
        assert fp16.graph.output[0].type.tensor_type.elem_type == f32
        assert sum(1 for t in fp16.graph.initializer if t.data_type == f16) > 0
        inferred = onnx.shape_inference.infer_shapes(fp16)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        # the preprocessing (TopK median of raw fluxes) and, for the ViT, LayerNorm/Softmax stay fp32
        for n in inferred.graph.node:
            if n.op_type in ("TopK", "Asinh", "LayerNormalization", "Softmax"):
                assert types.get(n.output[0], f32) == f32, (mem.name, n.op_type)
        assert mem.entry["artifacts"]["onnx_fp16"]["nodes"]["fp16"] > 0


def test_fused_graph_matches_members(bundle_dir):
    from lenstrt.data.simulate import simulate_arrays
    from lenstrt.data.simulate.presets import load_survey
    from lenstrt.metrics import sigmoid

    b = Bundle(bundle_dir)
    x = simulate_arrays(load_survey("lsst-gri"), 12, np.random.default_rng(3))["images"]
    score, std, per = run_onnx_guarded(b.path(b.fused["artifacts"]["onnx"]), x)
    assert score.shape == (12, 1) and per.shape == (12, 2)
    members = [sigmoid(run_onnx_guarded(b.path(m.artifact("onnx")), x)[0][:, 0] / m.temperature) for m in b.members]
    np.testing.assert_allclose(score[:, 0], np.mean(members, axis=0), atol=1e-5)
    np.testing.assert_allclose(std[:, 0], np.std(members, axis=0), atol=1e-5)


def test_tolerance_failure_names_member_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    import lenstrt.models.registry as reg
    from lenstrt.export.pipeline import export_bundle

    reg._load()
    monkeypatch.setitem(reg._SPECS, "resnet18", reg.ExportSpec(atol_fp32=1e-12, rtol_fp32=0.0))
    with pytest.raises(ExportError, match=r"member resnet18-s0: fp32 ONNX max \|logit diff\|"):
        export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", n_val=16, log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []


def test_auc_gate_applies_to_working_classifiers():
    from lenstrt.export.pipeline import auc_drop_fails

    assert auc_drop_fails({"auc_reference": 0.98, "auc_drop": 0.003}, 0.002)
    assert not auc_drop_fails({"auc_reference": 0.98, "auc_drop": 0.001}, 0.002)
    weak = {"auc_reference": 0.55, "auc_drop": 0.003}  # rank noise of a model that barely ranks
    assert not auc_drop_fails(weak, 0.002) and weak["auc_drop_enforced"] is False
    assert not auc_drop_fails({"max_abs_prob_diff": 0.0}, 0.002)  # unlabelled validation data


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_ort_crash_becomes_clear_error(tmp_path, sig):
    """The name in the message is the signal that killed the child (users see it), not a fixed word."""
    crash = [sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"]
    with pytest.raises(ExportError, match=rf"m.onnx: ONNX Runtime crashed \({sig.name}\) running this graph at "
                                          r"optimisation level 'basic'"):
        run_onnx_guarded(tmp_path / "m.onnx", np.zeros((1, 1, 8, 8), np.float32), opt_level="basic", child=crash)
    fail = [sys.executable, "-c", "import sys; print('noise'); sys.exit('bad graph: Gather index out of range')"]
    with pytest.raises(ExportError, match=r"m.onnx: ONNX Runtime failed \(bad graph: Gather index out of range\)"):
        run_onnx_guarded(tmp_path / "m.onnx", np.zeros((1, 1, 8, 8), np.float32), child=fail)


def test_require_trt_fails_cleanly_without_tensorrt(run_dir, tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "b"),
                                   "--require-trt"])
    assert res.exit_code == 1 and "--require-trt" in res.output and "TensorRT" in res.output
    assert not (tmp_path / "b").exists()


ENGINE = {"path": "m.plan", "tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3",
          "compute_capability": "9.0"}


@pytest.mark.parametrize("here,ok,msg", [
    (("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0"), True, None),
    (("10.13.0.40", "NVIDIA H100 80GB HBM3", "9.0"), True, None),   # same release, other build
    (("11.4.0.1", "NVIDIA H100 80GB HBM3", "9.0"), False, "built with TensorRT 10.13.0.35, this machine has 11.4"),
    (("10.13.0.35", "NVIDIA L4", "8.9"), False, "built on NVIDIA H100 80GB HBM3 (sm 9.0), this machine has NVIDIA L4"),
    ((None, "NVIDIA L4", "8.9"), False, "TensorRT is not installed"),
    (("10.13.0.35", None, None), False, "no CUDA GPU"),
])
def test_engine_compatibility_decision(here, ok, msg):
    if ok:
        check_engine(ENGINE, *here)
    else:
        with pytest.raises(BundleError) as ei:
            check_engine(ENGINE, *here, bundle_dir="engines/run")
        assert msg in str(ei.value)
        if here[0] and here[1]:
            assert "lenstrt export" in str(ei.value) and "engines/run" in str(ei.value)


@pytest.mark.parametrize("precision,flag", [("fp16", " --fp16 "), ("int8", " --int8 "), ("fp32", " --out ")])
def test_engine_refusal_rebuilds_the_same_precision(precision, flag):
    """The rebuild command a refused engine prints makes that engine again: --int8 for an INT8 one (without
    it the new bundle has no INT8 engine), nothing for an fp32 one."""
    with pytest.raises(BundleError) as ei:
        check_engine({**ENGINE, "precision": precision}, "11.4.0.1", ENGINE["gpu_name"], "9.0", bundle_dir="b")
    assert f"lenstrt export --checkpoint b/checkpoints{flag}" in str(ei.value)
    assert ("--fp16" in str(ei.value)) is (precision == "fp16") and ("--int8" in str(ei.value)) is (precision == "int8")


@pytest.mark.parametrize("version,problem", [("8.6.1", "TensorRT 8.6.1 is too old"), ("10.0.1", None),
                                             ("11.4.0", None)])
def test_tensorrt_before_10_is_refused_not_crashed(version, problem, monkeypatch):
    """TensorRT 8.6 (older containers) has no strongly typed networks, BF16 or INT64: building would die on
    an AttributeError. Both the export's status and the runtime's probe refuse it with the reason."""
    import sys
    import types

    from lenstrt.export import tensorrt as trtx
    from lenstrt.runtime import trt as rtrt

    fake = types.ModuleType("tensorrt")
    fake.__version__, fake.Builder = version, object
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    got, why = rtrt.probe()
    ok, swhy = trtx.status()
    if problem:
        assert got is None and problem in why and ">= 10" in why
        assert not ok and problem in swhy
    else:
        assert got == version and "too old" not in swhy


def test_triton_repository_parses_and_matches_onnx(bundle_dir, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from lenstrt.export.triton import write_repository

    names = write_repository(bundle_dir, tmp_path / "repo")
    assert names == ["resnet18-s0", "vit_tiny-s1000", "ensemble_fused"]
    for name in names:
        cfg = text_format.Parse((tmp_path / "repo" / name / "config.pbtxt").read_text(), mc.ModelConfig())
        model = onnx.load(str(tmp_path / "repo" / name / "1" / "model.onnx"))
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 256
        assert cfg.dynamic_batching.preferred_batch_size == [16]
        assert [i.name for i in cfg.input] == [i.name for i in model.graph.input]
        assert [o.name for o in cfg.output] == [o.name for o in model.graph.output]
        onnx_in = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
        assert list(cfg.input[0].dims) == onnx_in == [3, 64, 64]


@pytest.mark.trt
def test_tensorrt_engine_build_and_fingerprint(bundle_dir, tmp_path):
    b = Bundle(bundle_dir)
    m = b.members[0]
    info = trtx.build_engine(b.path(m.artifact("onnx_fp16")), tmp_path / "m.plan", "images", (3, 64, 64),
                             trtx.BuildOptions(1, 16, 64, timing_cache=str(tmp_path / "timing.cache")))
    assert (tmp_path / "m.plan").stat().st_size > 0 and (tmp_path / "timing.cache").stat().st_size > 0
    check_engine({"path": "m.plan", **info}, info["tensorrt_version"], info["gpu_name"], info["compute_capability"])
    assert json.dumps(info) and info["build"]["strongly_typed"]


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18_half"])
def test_cpu_architectures_export_and_pass_the_fp32_and_fp16_gates(sim_dir, tmp_path, arch):
    """MobileNetV3 (hardswish, squeeze-excite) and the half-width ResNet (a plain nn.Sequential) through the
    same exporter and gates as resnet18."""
    from lenstrt.bundle import Bundle
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.export.pipeline import export_bundle
    from lenstrt.train.trainer import train

    cfg = TrainingConfig(arch=(arch,), max_steps=20, batch_size=16, val_every=10, warmup_steps=5)
    train(cfg, DataConfig(), [str(sim_dir)], tmp_path / "run", device="cpu", progress=False)
    export_bundle([str(tmp_path / "run")], tmp_path / "b", fp16=True, batch=(1, 16, 64), data=[str(sim_dir)],
                  n_val=64, log=lambda *a: None)
    (mem,) = Bundle(tmp_path / "b").members
    assert mem.entry["arch"] == arch
    assert set(mem.entry["artifacts"]) == {"onnx", "onnx_fp16"}
    a = mem.entry["agreement"]
    assert a["fp32"]["max_abs_logit_diff"] <= 1e-4 + 1e-5 * a["fp32"]["max_abs_ref_logit"]


def _cast_graph(second_to: int):
    """x -> Cast(fp16) -> v; v feeds two Sigmoids through Casts that both write 'v_cast_to_fp32', the way
    onnxruntime's converter before 1.31 wrote them (seen on the first GPU machine, onnxruntime 1.30)."""
    from onnx import TensorProto, helper

    n = [helper.make_node("Cast", ["x"], ["v"], to=TensorProto.FLOAT16, name="c0"),
         helper.make_node("Cast", ["v"], ["v_cast_to_fp32"], to=TensorProto.FLOAT, name="c1"),
         helper.make_node("Sigmoid", ["v_cast_to_fp32"], ["a"], name="s1"),
         helper.make_node("Cast", ["v"], ["v_cast_to_fp32"], to=second_to, name="c2"),
         helper.make_node("Sigmoid", ["v_cast_to_fp32"], ["b"], name="s2")]
    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [2]) for k in ("x", "a", "b")]
    return helper.make_graph(n, "g", [io[0]], io[1:])


def test_repeated_fp32_casts_from_an_old_converter_are_dropped():
    import onnxruntime as ort

    from lenstrt.export.fp16 import _drop_repeated_casts

    g = _cast_graph(onnx.TensorProto.FLOAT)
    with pytest.raises(onnx.checker.ValidationError, match="SSA"):
        onnx.checker.check_model(onnx.helper.make_model(g), full_check=True)
    _drop_repeated_casts(g, "m.onnx")
    assert [n.name for n in g.node] == ["c0", "c1", "s1", "s2"]
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18)])
    onnx.checker.check_model(m, full_check=True)
    x = np.array([0.0, 2.0], np.float32)
    a, b = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, 1 / (1 + np.exp(-x)), atol=1e-3)
    # a repeated output that is not the same cast is not ours to guess at
    with pytest.raises(ExportError, match="m.onnx: fp16 conversion wrote 'v_cast_to_fp32' twice.*upgrade onnxruntime"):
        _drop_repeated_casts(_cast_graph(onnx.TensorProto.DOUBLE), "m.onnx")
