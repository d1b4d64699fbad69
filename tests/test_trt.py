"""TensorRT end to end: needs TensorRT and a CUDA GPU (skipped with the reason elsewhere). Engines are
built into a temporary bundle with the timing cache in a temporary home, never the user's."""

import numpy as np
import pytest

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def trt_bundle(run_dir, tmp_path_factory):
    import os

    from lenstrt.export.pipeline import export_bundle

    home = tmp_path_factory.mktemp("cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(home)
    try:
        out = tmp_path_factory.mktemp("trt") / "b"
        m = export_bundle([str(run_dir)], out, fp16=True, fuse=True, batch=(1, 16, 32), n_val=64, log=print)
    finally:
        os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.__setitem__("XDG_CACHE_HOME", old)
    assert list(home.glob("lenstrt/trt_timing_*.cache"))
    return out, m


def test_every_engine_is_built_and_validated(trt_bundle):
    _, m = trt_bundle
    assert [e["member"] for e in m["engines"]] == ["resnet18-s0", "vit_tiny-s1000", "fused"]
    for e in m["engines"]:
        assert e["build"]["strongly_typed"] and e["agreement"]["max_abs_prob_diff"] <= 1e-2


def test_trt_members_and_fused_agree_with_ort(trt_bundle, sim_dir):
    from lenstrt.bundle import Bundle
    from lenstrt.data.readers import iter_batches
    from lenstrt.runtime.select import build_ensemble

    out, _ = trt_bundle
    b = Bundle(out)
    x = next(iter_batches(sim_dir, 80)).images  # 80 > the profile's max of 32: split into 32, 32, 16
    with build_ensemble(b, "ort", "cpu") as e:
        ref = e.infer(x).score
    with build_ensemble(b, "trt", "cuda", concurrency="streams", cuda_graph_batch=32) as e:
        assert e.max_batch == 32 and e.info["shared_upload"]
        got = e.infer(x).score
    with build_ensemble(b, "trt", "cuda", fused=True) as e:
        fused = e.infer(x)
    np.testing.assert_allclose(got, ref, atol=1e-2)
    np.testing.assert_allclose(fused.score, ref, atol=1e-2)
    assert fused.members.shape == (80, 2)


def test_serve_fused_on_trt(trt_bundle, sim_dir, tmp_path):
    from lenstrt.serve.pipeline import ServeOptions, serve

    out, _ = trt_bundle
    s = serve(out, [str(sim_dir)], tmp_path / "o", ServeOptions(backend="trt", fused=True, batch_size=48,
                                                                cuda_graph=True, unit_rows=40), progress=False)
    assert s["backend"] == "trt" and s["counts"]["catalog_rows"] == 96


def test_cuda_graph_replay_equals_the_ordinary_context(trt_bundle, sim_dir):
    from lenstrt.bundle import Bundle
    from lenstrt.data.readers import iter_batches
    from lenstrt.runtime.select import build_ensemble

    out, _ = trt_bundle
    x = next(iter_batches(sim_dir, 32)).images
    with build_ensemble(Bundle(out), "trt", "cuda", only=["resnet18-s0"]) as e:
        plain = e.raw(x)[0]
    with build_ensemble(Bundle(out), "trt", "cuda", only=["resnet18-s0"], cuda_graph_batch=32) as e:
        assert e.runners[0]._graph is not None
        graphed = [e.raw(x)[0], e.raw(x[:20])[0], e.raw(x)[0]]  # replay, the ordinary context, replay again
    np.testing.assert_array_equal(graphed[0], plain)
    np.testing.assert_array_equal(graphed[2], plain)
    np.testing.assert_allclose(graphed[1], plain[:20], atol=1e-5)


def test_int8_engine_builds_from_the_symmetric_graph_and_passes_its_gate(run_dir, tmp_path):
    """The INT8 engine on a real TensorRT: built strongly typed from MEMBER.int8.trt.onnx (what its parser takes:
    zero points of 0, float biases), run against the PyTorch reference, gated like the CPU's INT8 graph. Before
    2026-11-30 it was built from the CPU graph, which the parser refuses (docs/export.md)."""
    from lenstrt.bundle import Bundle
    from lenstrt.export import tensorrt as trtx
    from lenstrt.export.pipeline import export_bundle

    fp = trtx.gpu_fingerprint()
    if problem := trtx.int8_problem(fp["tensorrt_version"], fp["compute_capability"]):
        pytest.skip(problem)
    m = export_bundle([str(run_dir / "resnet18-s0" / "best.pt")], tmp_path / "b", batch=(1, 16, 32), n_val=64,
                      log=print, int8=True, calib_n=64)
    arts = m["members"][0]["artifacts"]
    assert arts["plan_int8"]["source_graph"] == "int8-symmetric" and arts["plan_int8"]["build"]["strongly_typed"]
    assert arts["onnx_int8_trt"]["path"] == "resnet18-s0.int8.trt.onnx"
    assert m["members"][0]["agreement"]["engine_int8"]["mean_abs_prob_diff"] <= 0.02
    assert all(r["ok"] for r in Bundle(tmp_path / "b").verify())
