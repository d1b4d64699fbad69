"""The backend registry (one declaration per backend), the Runner template (state and input checks), and
precision as data in bundles: schema 2 written, schema 1 still read, served and benched."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lenstrt.bundle import SCHEMA, Bundle, find, kind, precisions
from lenstrt.errors import BackendError, BundleError, ConfigError
from lenstrt.runtime import registry
from lenstrt.runtime.base import Runner
from lenstrt.runtime.registry import BACKENDS, CHOICES, BackendSpec, Capabilities, Choice
from lenstrt.runtime.select import build_ensemble, choose_backend

CPU = Capabilities(False, None, None, ("CPUExecutionProvider",), None)


class Echo(Runner):
    """Logit = mean pixel; implements only the backend part."""
    backend = "echo"

    def __init__(self, name, input_shape=None):
        super().__init__(name, input_shape)
        self.calls = []

    def _activate(self):
        self.calls.append("activate")

    def _infer(self, images):
        self.calls.append("infer")
        return np.asarray(images).reshape(len(images), -1).mean(1).astype(np.float32)

    def _deactivate(self):
        self.calls.append("deactivate")


def test_runner_template_checks_state_shape_and_dtype():
    r = Echo("m", (3, 4, 4))
    x = np.ones((2, 3, 4, 4), np.float32)
    with pytest.raises(BackendError, match="m: echo runner used before activate"):
        r.infer(x)
    with r:
        assert r.infer(x).tolist() == [1.0, 1.0]
        with pytest.raises(BackendError, match=r"input of shape \[2, 3, 5, 4\], the bundle takes \[N, 3, 4, 4\]"):
            r.infer(np.ones((2, 3, 5, 4), np.float32))
        with pytest.raises(BackendError, match="input of shape \\[3, 4, 4\\]"):
            r.infer(np.ones((3, 4, 4), np.float32))
        with pytest.raises(BackendError, match="input dtype float64, the bundle takes float32"):
            r.infer(np.ones((2, 3, 4, 4)))
    with pytest.raises(BackendError, match="used after deactivate"):
        r.infer(x)
    assert r.calls == ["activate", "infer", "deactivate"]  # refused inputs never reach the backend
    with r:  # activate again after a deactivate: allowed
        assert r.infer_async(x).shape == (2,)


def test_bundle_finds_artifacts_by_format_and_precision_in_both_schemas():
    v1 = {"onnx": {"path": "a.onnx", "precision": "fp32"}, "onnx_fp16": {"path": "a.fp16.onnx",
          "precision": "fp16 (mixed, fp32 I/O)"}, "onnx_int8": {"path": "a.int8.onnx", "precision": "int8"},
          "plan": {"path": "a.plan"}, "plan_int8": {"path": "a.int8.plan", "precision": "int8"}}
    assert [kind(k, e) for k, e in v1.items()] == [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
                                                   ("plan", "fp16"), ("plan", "int8")]
    v2 = {"g32": {"path": "a.onnx", "format": "onnx", "precision": "fp32"},
          "g8": {"path": "a.int8.onnx", "format": "onnx", "precision": "int8"},
          "e32": {"path": "a.plan", "format": "plan", "precision": "fp32"}}
    assert find(v2, "onnx", "int8")["path"] == "a.int8.onnx" and find(v2, "plan", "fp16") is None
    assert precisions(v2, "onnx") == ["fp32", "int8"] and precisions(v1, "plan") == ["fp16", "int8"]


def test_cli_choices_and_help_come_from_the_registry():
    from lenstrt.cli.main import cli

    serve_help = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "300"}).output
    bench_help = CliRunner().invoke(cli, ["bench", "--help"], env={"COLUMNS": "300"}).output
    for name, c in CHOICES.items():
        assert name in bench_help
        assert (name in serve_help) != c.bench_only
    res = CliRunner().invoke(cli, ["serve", "--bundle", "b", "--input", "x", "--out", "o", "--backend", "tensorflow"])
    assert res.exit_code == 2 and "tensorflow" in res.output


def _toy_bundle(tmp_path) -> Bundle:
    m = {"schema": SCHEMA, "input": {"shape": [-1, 1, 2, 2]}, "output": {"name": "logits"},
         "members": [{"name": "m0", "arch": "x", "temperature": 1.0, "artifacts": {
             "toy": {"path": "m0.toy", "format": "toy", "precision": "fp32"}}}], "fused": None}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "m0.toy").write_text("")
    return Bundle(tmp_path)


def test_a_new_backend_is_one_registry_entry(tmp_path, monkeypatch):
    """Declared once: backend choice, precision choice and ensemble construction pick it up."""
    spec = BackendSpec("toy", "a toy backend", precisions={"cpu": ("fp32",)}, artifacts={"fp32": ("toy", "fp32")},
                       auto_order={"cpu": ("fp32",)},
                       why_not=lambda caps, device: None if caps.openvino else "needs the toy runtime",
                       make_runner=lambda req: Echo(req.name, req.input_shape), fused=False)
    monkeypatch.setitem(BACKENDS, "toy", spec)
    monkeypatch.setitem(CHOICES, "toy", Choice("toy", "toy", "cpu", "toy"))
    b = _toy_bundle(tmp_path)
    with pytest.raises(BackendError, match="--backend toy needs the toy runtime"):
        choose_backend("toy", CPU, b)
    caps = Capabilities(False, None, None, ("CPUExecutionProvider",), None, openvino="1")
    backend, device, why = choose_backend("toy", caps, b)
    assert (backend, device) == ("toy", "cpu") and "precision fp32" in why
    with build_ensemble(b, "toy", "cpu") as ens:
        s = ens.infer(np.zeros((3, 1, 2, 2), np.float32))
    assert np.allclose(s.score, 0.5) and ens.runners[0].info["precision"] == "fp32"
    with pytest.raises(ConfigError, match="--fused runs the fused"):
        _fused(b, "toy")
    assert registry.supported_anywhere("toy", "fp32") and not registry.supported_anywhere("toy", "int8")


def _fused(b, backend):
    b.manifest["fused"] = {"outputs": ["score"], "artifacts": {}}
    return build_ensemble(b, backend, "cpu", fused=True)


def test_unknown_backend_lists_the_registry(tmp_path):
    b = _toy_bundle(tmp_path)
    with pytest.raises(ConfigError, match="choose one of auto, torch, ort"):
        choose_backend("tensorflow", CPU, b)


# -- schema 2 written, schema 1 read -------------------------------------------------------------------------

def _as_v1(manifest: dict) -> dict:
    """The manifest as lenstrt-bundle/1 wrote it: the kind in the key, free-text precision, no tolerances."""
    m = json.loads(json.dumps(manifest))
    m["schema"] = "lenstrt-bundle/1"
    groups = [mem["artifacts"] for mem in m["members"]] + ([m["fused"]["artifacts"]] if m.get("fused") else [])
    for arts in groups:
        for e in arts.values():
            e.pop("format", None)
            if e.pop("io", None):
                e["precision"] = "fp16 (mixed, fp32 I/O)"
    for mem in m["members"]:
        mem.pop("tolerances", None)
        mem["checkpoint"].pop("format", None)
        mem["checkpoint"].pop("precision", None)
    return m


def test_export_writes_schema_2_with_precision_as_data(bundle_dir):
    b = Bundle(bundle_dir)
    assert b.manifest["schema"] == "lenstrt-bundle/2" and b.schema_version == 2
    for m in b.members:
        for e in m.entry["artifacts"].values():
            assert e["format"] in ("onnx", "plan") and e["precision"] in ("fp32", "fp16", "int8")
        assert set(m.tolerances) == {"fp32", "fp16"}
        assert m.tolerances["fp16"]["max_abs_prob"] == pytest.approx(1e-2)
        assert m.artifact("onnx", "fp16") is m.artifact("onnx_fp16")


def test_a_v1_bundle_is_still_served_and_benched(bundle_dir, sim_dir, tmp_path):
    import shutil

    from lenstrt.bench.harness import BenchSpec, run_config
    from lenstrt.serve.pipeline import ServeOptions, serve

    old = tmp_path / "v1"
    shutil.copytree(bundle_dir, old)
    (old / "manifest.json").write_text(json.dumps(_as_v1(json.loads((bundle_dir / "manifest.json").read_text()))))
    b = Bundle(old)
    assert b.schema_version == 1 and b.members[0].tolerances == {}
    assert b.members[0].artifact("onnx", "fp16")["path"].endswith(".fp16.onnx")
    with build_ensemble(b, "ort", "cpu", precision="fp16") as e16, build_ensemble(Bundle(bundle_dir), "ort", "cpu",
                                                                                   precision="fp16") as e2:
        x = np.load(_cutouts(tmp_path, b))
        np.testing.assert_allclose(e16.infer(x).score, e2.infer(x).score, atol=1e-6)
    s = serve(old, [str(sim_dir / "shard-00000.h5")], tmp_path / "out", ServeOptions(backend="ort", fused=True),
              progress=False, log=lambda *a: None)
    assert s["counts"]["catalog_rows"] > 0
    cfg = {"backend": "ort", "ensemble": "separate", "batch_size": 4, "precision": "fp16", "bundle": str(old),
           "warmup_ms": 1, "cutouts_npy": _cutouts(tmp_path, b), "out": str(tmp_path / "r.json"),
           "scores_out": str(tmp_path / "s.npy")}
    row = run_config(cfg, 300, BenchSpec(duration_s=0.15, timeout_s=300))
    assert row["ok"] and row["precision"] == "fp16" and row["spread"]["windows"] >= 3


def _cutouts(tmp_path, b: Bundle) -> str:
    p = tmp_path / "cutouts.npy"
    if not p.exists():
        c, h, w = b.input["shape"][1:]
        np.save(p, np.random.default_rng(0).normal(100, 10, size=(8, c, h, w)).astype(np.float32))
    return str(p)


def test_an_unknown_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "lenstrt-bundle/9"}))
    with pytest.raises(BundleError, match="this lenstrt reads lenstrt-bundle/1 and lenstrt-bundle/2"):
        Bundle(tmp_path)


def test_tolerances_are_keyed_by_precision_and_one_gate_serves_them():
    from lenstrt.export.tolerances import gate, tolerances
    from lenstrt.models import export_spec

    t = tolerances(export_spec("resnet18"))
    assert set(t) == {"fp32", "fp16", "bf16", "int8"} and t["int8"].min_top100 == 0.95
    ok16 = {"n": 300, "max_abs_prob_diff": 5e-3, "mean_abs_prob_diff": 1e-3}
    assert gate(dict(ok16), t["fp16"]) is None
    assert "max |prob diff| 2.00e-02" in gate({**ok16, "max_abs_prob_diff": 2e-2}, t["fp16"])
    bad8 = {"n": 300, "max_abs_prob_diff": 0.1, "mean_abs_prob_diff": 0.004, "top100_overlap": 0.9,
            "auc_reference": 0.99, "auc": 0.989, "auc_drop": 0.001}
    assert gate(dict(bad8, top100_overlap=0.97), t["int8"]) is None
    assert "top-100 overlap 0.90 (min 0.95)" in gate(bad8, t["int8"])
