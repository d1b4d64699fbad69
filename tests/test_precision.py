"""--precision: one meaning on every backend, `auto` picks the fastest validated one and says why,
clear errors where a backend or bundle cannot run it; and the bench grid built from it."""

import json

import pytest

from lenstrt.bundle import Bundle
from lenstrt.errors import BackendError, BundleError, ConfigError
from lenstrt.runtime.select import Capabilities, choose_backend, resolve_precision

CPU = Capabilities(False, None, None, ("CPUExecutionProvider",), None)
CPU_OV = Capabilities(False, None, None, ("CPUExecutionProvider",), None, openvino="2026.4.1", cpu_bf16=True)
CPU_OV_NO_BF16 = Capabilities(False, None, None, ("CPUExecutionProvider",), None, openvino="2026.4.1")
H100 = Capabilities(True, "NVIDIA H100", "9.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), "10.13.0.35")
INT8_AGREE = {"auc_drop": 0.0002, "top100_overlap": 0.98, "max_abs_prob_diff": 0.17, "mean_abs_prob_diff": 0.004}


def _bundle(tmp_path, int8: bool, fp16: bool = False, fused_int8: bool | None = None,
            runtimes: dict | None = None) -> Bundle:
    """`runtimes`: the INT8 graphs' per-runtime verdicts (`runtimes`, `refused`) as export writes them; none:
    a bundle from before per-runtime gates."""
    def arts(name):
        a = {"onnx": {"path": f"{name}.onnx"}}
        if fp16:
            a["onnx_fp16"] = {"path": f"{name}.fp16.onnx"}
        if int8:
            a["onnx_int8"] = {"path": f"{name}.int8.onnx", "agreement": {"mean_abs_prob_diff": 0.003},
                              **(runtimes or {})}
        return a

    fi = int8 if fused_int8 is None else fused_int8
    m = {"schema": "lenstrt-bundle/1", "input": {"shape": [-1, 3, 64, 64]}, "output": {"name": "logits"},
         "members": [{"name": f"m{i}", "arch": "resnet18", "temperature": 1.0, "artifacts": arts(f"m{i}"),
                      "agreement": {"int8": INT8_AGREE} if int8 else {}} for i in range(2)],
         "fused": {"outputs": ["score", "score_std", "member_scores"],
                   "artifacts": {k: v for k, v in arts("f").items() if fi or k != "onnx_int8"}}}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    return Bundle(tmp_path)


def test_auto_on_a_cpu_uses_the_validated_int8_graph_and_says_why(tmp_path):
    b = _bundle(tmp_path / "a", int8=True)
    backend, device, why = choose_backend("auto", CPU_OV, b)
    assert (backend, device) == ("openvino", "cpu") and "precision int8" in why and "AUC drop +0.0002" in why
    backend, device, why = choose_backend("auto", CPU, b)  # no OpenVINO: ONNX Runtime runs the same graph
    assert (backend, device) == ("ort", "cpu") and "precision int8" in why and "OpenVINO" in why
    assert resolve_precision("ort", "cpu", "auto", b) [0] == "int8"
    assert resolve_precision("openvino", "cpu", None, b)[0] == "int8"


NO_VNNI = {"runtimes": ["openvino"], "refused": {"onnxruntime": "mean |prob diff| 3.75e-02 (tol 0.02)"}}


def test_int8_validated_on_openvino_only_runs_there(tmp_path):
    """A CPU without VNNI at export: ONNX Runtime's INT8 kernels failed the gate, OpenVINO's passed."""
    b = _bundle(tmp_path / "a", int8=True, runtimes=NO_VNNI)
    b.manifest["members"][0]["agreement"]["int8_openvino"] = {**INT8_AGREE, "auc_drop": 0.0007}
    backend, _, why = choose_backend("auto", CPU_OV, b)
    assert backend == "openvino" and "precision int8" in why and "m0 AUC drop +0.0007" in why  # its own figures
    assert resolve_precision("openvino", "cpu", "auto", b)[0] == "int8"
    # ONNX Runtime keeps to fp32 and says where the INT8 graph runs
    backend, _, why = choose_backend("auto", CPU, b)
    assert backend == "ort" and "precision fp32" in why
    assert "did not pass its gate on onnxruntime at export (mean |prob diff| 3.75e-02" in why
    assert "--backend openvino" in why and "export with --int8" not in why
    assert resolve_precision("ort", "cpu", "auto", b)[0] == "fp32"
    for caps in (CPU, CPU_OV):
        with pytest.raises(BackendError, match=r"--precision int8 with ort: the bundle's INT8 graph m0.int8.onnx did "
                                               r"not pass its gate on onnxruntime .*it did on --backend openvino"):
            choose_backend("ort", caps, b, precision="int8")
    # the fused graph is judged on its own verdicts
    fb = _bundle(tmp_path / "f", int8=True, runtimes=NO_VNNI)
    fb.manifest["fused"]["artifacts"]["onnx_int8"] = {"path": "f.int8.onnx", "runtimes": ["onnxruntime", "openvino"]}
    assert resolve_precision("ort", "cpu", "auto", fb, fused=True)[0] == "int8"
    assert resolve_precision("ort", "cpu", "auto", fb)[0] == "fp32"


def test_int8_refused_by_openvino_runs_on_onnx_runtime(tmp_path):
    b = _bundle(tmp_path / "a", int8=True, runtimes={"runtimes": ["onnxruntime"],
                                                     "refused": {"openvino": "top-100 overlap 0.90 (min 0.95)"}})
    backend, _, why = choose_backend("auto", CPU_OV, b)
    assert backend == "ort" and "precision int8" in why and "OpenVINO refused it at export" in why
    assert resolve_precision("openvino", "cpu", "auto", b)[0] == "fp32"
    with pytest.raises(BackendError, match=r"gate on openvino at export \(top-100 overlap 0.90"):
        resolve_precision("openvino", "cpu", "int8", b)


def test_auto_without_int8_keeps_fp32_and_gpu_choices(tmp_path):
    plain = _bundle(tmp_path / "a", int8=False, fp16=True)
    backend, device, why = choose_backend("auto", CPU_OV, plain)
    assert (backend, device) == ("ort", "cpu") and "precision fp32" in why and "--int8" in why
    assert choose_backend("auto", H100, plain)[:2] == ("ort", "cuda")
    assert resolve_precision("ort", "cuda", "auto", plain)[0] == "fp16"
    assert resolve_precision("torch", "cpu", "auto", plain)[0] == "fp32"
    assert resolve_precision("torch", "cuda", "auto", plain)[0] == "fp16"


def test_fused_int8_needs_the_fused_int8_graph(tmp_path):
    b = _bundle(tmp_path / "a", int8=True, fused_int8=False)
    assert choose_backend("auto", CPU_OV, b, fused=True)[:2] == ("ort", "cpu")
    assert resolve_precision("ort", "cpu", "auto", b, fused=True)[0] == "fp32"
    with pytest.raises(BundleError, match="fused graph have no int8 graph; re-export with --int8"):
        resolve_precision("openvino", "cpu", "int8", b, fused=True)


@pytest.mark.parametrize("backend,device,precision,msg", [
    ("torch", "cpu", "int8", "the torch backend on a CPU runs fp32, bf16"),
    ("torch", "cpu", "fp16", "the torch backend on a CPU runs fp32, bf16"),
    ("ort", "cpu", "bf16", "the ort backend on a CPU runs fp32, fp16, int8"),
    ("openvino", "cpu", "fp16", "the openvino backend on a CPU runs fp32, bf16, int8"),
])
def test_unsupported_precision_is_a_clear_error(tmp_path, backend, device, precision, msg):
    b = _bundle(tmp_path / "a", int8=True)
    with pytest.raises(BackendError, match=msg):
        resolve_precision(backend, device, precision, b)


def test_missing_graph_and_bad_names(tmp_path):
    plain = _bundle(tmp_path / "a", int8=False)
    with pytest.raises(BundleError, match="no int8 graph; re-export with --int8"):
        resolve_precision("ort", "cpu", "int8", plain)
    with pytest.raises(BundleError, match="no fp16 graph; re-export with --fp16"):
        resolve_precision("ort", "cpu", "fp16", plain)
    with pytest.raises(ConfigError, match="--precision 'fp8'"):
        choose_backend("ort", CPU, plain, precision="fp8")
    with pytest.raises(BackendError, match="OpenVINO is not installed"):
        choose_backend("openvino", CPU, plain)


def test_bf16_on_openvino_needs_native_bf16(tmp_path):
    plain = _bundle(tmp_path / "a", int8=False)
    assert resolve_precision("openvino", "cpu", "bf16", plain, cpu_bf16=True)[0] == "bf16"
    with pytest.raises(BackendError, match="native bf16"):
        resolve_precision("openvino", "cpu", "bf16", plain, cpu_bf16=False)
    # auto backend with bf16 asked: OpenVINO where native, else PyTorch autocast
    assert choose_backend("auto", CPU_OV, plain, precision="bf16")[:2] == ("openvino", "cpu")
    assert choose_backend("auto", CPU_OV_NO_BF16, plain, precision="bf16")[:2] == ("torch", "cpu")


def test_tensorrt_precision_is_the_engines(tmp_path):
    b = _bundle(tmp_path / "a", int8=False)
    for m in b.manifest["members"]:
        m["artifacts"]["plan"] = {"path": "x.plan", "precision": "int8"}
    assert resolve_precision("trt", "cuda", "auto", b)[0] == "int8"
    with pytest.raises(BackendError, match="engines are int8; rebuild them"):
        resolve_precision("trt", "cuda", "fp16", b)


def test_bench_grid_runs_each_precision_where_supported(tmp_path):
    from lenstrt.bench.harness import BenchSpec, configs, ratios

    b = _bundle(tmp_path / "a", int8=True)
    cfgs = configs(BenchSpec(backends=("torch", "ort", "openvino"), batch_sizes=(64,), ensemble=("separate",),
                             precisions=("fp32", "int8")), b)
    got = {(c["backend"], c.get("precision")) for c in cfgs}
    assert got == {("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    rows = [{"ok": True, "backend": "torch", "ensemble": "separate", "batch_size": 64, "images_per_s": 100.0,
             "label": "t", "precision": "fp32"},
            {"ok": True, "backend": "torch", "ensemble": "separate", "batch_size": 64, "images_per_s": 170.0,
             "label": "tb", "precision": "bf16"},
            {"ok": True, "backend": "openvino", "ensemble": "separate", "batch_size": 64, "images_per_s": 360.0,
             "label": "o", "precision": "int8"}]
    r = {q["label"]: q["speedup"] for q in ratios(rows)}
    assert r == {"tb": pytest.approx(1.7), "o": pytest.approx(3.6)}  # against torch fp32 only
    both = [{"ok": True, "backend": "ort", "ensemble": e, "batch_size": 64, "images_per_s": v, "label": lb,
             "precision": p} for e, v, lb, p in [("separate", 80.0, "s32", "fp32"), ("separate", 180.0, "s8", "int8"),
                                                  ("fused", 84.0, "f32", "fp32"), ("fused", 198.0, "f8", "int8")]]
    r = {q["label"]: q["speedup"] for q in ratios(both) if q["vs"] == "separate"}
    assert r == {"f32": pytest.approx(1.05), "f8": pytest.approx(1.1)}  # fused vs separate at its own precision


def test_cli_rejects_unknown_precision(tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    b = _bundle(tmp_path / "a", int8=False)
    res = CliRunner().invoke(cli, ["bench", "--bundle", str(b.root), "--precision", "int4", "--output-dir",
                                   str(tmp_path / "o")])
    assert res.exit_code != 0 and "int4" in res.output
    res = CliRunner().invoke(cli, ["bench", "--bundle", str(b.root), "--backends", "torch", "--precision", "int8",
                                   "--output-dir", str(tmp_path / "o")])
    assert res.exit_code != 0 and "no backend in torch runs int8" in res.output
