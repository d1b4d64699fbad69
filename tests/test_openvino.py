"""The OpenVINO Runner (`--backend openvino`): skipped, with the reason, where the extra is absent."""

import importlib.util

import numpy as np
import pytest

from lenstrt.bundle import Bundle
from lenstrt.errors import BackendError
from lenstrt.runtime.openvino import compile_config

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="needs OpenVINO (pip install 'lenstrt[openvino]')")


def _x(n=12, seed=0):
    return np.random.default_rng(seed).normal(200, 20, size=(n, 3, 64, 64)).astype(np.float32)


def test_compile_config_by_precision():
    assert compile_config("fp32", 2) == {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32",
                                         "INFERENCE_NUM_THREADS": "2"}
    assert compile_config("int8", None)["INFERENCE_PRECISION_HINT"] == "f32"  # float parts stay f32
    assert compile_config("bf16", None)["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(BackendError, match="runs fp32, bf16 or int8"):
        compile_config("fp16", None)


@needs_openvino
def test_members_and_fused_match_onnx_runtime(bundle_dir):
    from lenstrt.runtime.select import build_ensemble

    b = Bundle(bundle_dir)
    x = _x()
    for fused in (False, True):
        with build_ensemble(b, "ort", "cpu", fused=fused) as eo, \
                build_ensemble(b, "openvino", "cpu", fused=fused, precision="fp32") as ev:
            so, sv = eo.infer(x), ev.infer(x)
            info = ev.info["runners"][0]
            assert info["backend"] == "openvino" and info["precision"] == "fp32" and info["streams"] >= 1
            assert info["infer_requests"] >= 1
            np.testing.assert_allclose(sv.score, so.score, atol=1e-4)
            np.testing.assert_allclose(sv.members, so.members, atol=1e-4)
            assert ev.infer(x[:1]).score.shape == (1,)  # a batch smaller than the infer requests


@needs_openvino
def test_runner_refuses_a_changed_graph_and_use_before_activate(bundle_dir):
    from lenstrt.errors import BundleError
    from lenstrt.runtime.openvino import OpenVinoRunner

    b = Bundle(bundle_dir)
    art = b.members[0].artifact("onnx")
    r = OpenVinoRunner("m", b.path(art), sha256="0" * 64)
    with pytest.raises(BundleError, match="sha256 does not match"):
        r.activate()
    with pytest.raises(BackendError, match="before activate"):
        r.infer(_x(1))


@needs_openvino
def test_bf16_runs_where_native_else_clear_error(bundle_dir):
    from lenstrt.runtime.select import build_ensemble, cpu_has_bf16

    b = Bundle(bundle_dir)
    if not cpu_has_bf16():
        with pytest.raises(BackendError, match="native bf16"):
            build_ensemble(b, "openvino", "cpu", precision="bf16")
        return
    with build_ensemble(b, "ort", "cpu") as eo, build_ensemble(b, "openvino", "cpu", precision="bf16") as ev:
        assert np.abs(ev.infer(_x()).score - eo.infer(_x()).score).max() < 0.05


@needs_openvino
def test_serve_with_openvino(bundle_dir, sim_dir, tmp_path):
    from lenstrt.serve.pipeline import ServeOptions, serve

    s = serve(bundle_dir, [str(sim_dir / "shard-00000.h5")], tmp_path / "out",
              ServeOptions(backend="openvino", precision="fp32", unit_rows=40, batch_size=16), progress=False,
              log=lambda *a: None)
    assert s["backend"] == "openvino" and "precision fp32" in s["backend_choice"]
    assert s["counts"]["catalog_rows"] == 48
