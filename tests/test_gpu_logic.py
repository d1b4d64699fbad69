"""The pure logic of the GPU and TensorRT paths, tested without a GPU (issue #11): output mapping by
name, batch splitting to an engine profile, stream hand-over of a shared batch, backend choice with a
fused bundle, timing-cache keys, NVML handle choice, CUDA RNG state in checkpoints, ORT TensorRT
provider options, and engine validation wired through export (TensorRT played by ONNX Runtime)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lenstrt.bundle import Bundle
from lenstrt.errors import BackendError, BundleError, ExportError
from lenstrt.runtime.base import Runner, batch_ranges, order_outputs
from lenstrt.runtime.ensemble import Ensemble
from lenstrt.runtime.select import Capabilities, choose_backend

ROOT = Path(__file__).resolve().parents[1]


# -- outputs by name, batches to the profile ---------------------------------------------------------------

def test_outputs_are_mapped_by_name_not_engine_order():
    n = 5
    named = {"member_scores": np.zeros((n, 2)), "score_std": np.full((n, 1), 0.1), "score": np.full((n, 1), 0.9)}
    score, std, per = order_outputs(named, ["score", "score_std", "member_scores"])
    assert score.shape == (n,) and (score == 0.9).all() and (std == 0.1).all() and per.shape == (n, 2)
    logits = order_outputs({"logits": np.arange(3.0)[:, None]}, ["logits"])
    assert logits.tolist() == [0.0, 1.0, 2.0]
    one_member = {"score": np.zeros((n, 1)), "score_std": np.zeros((n, 1)), "member_scores": np.zeros((n, 1))}
    assert order_outputs(one_member, ["score", "score_std", "member_scores"])[2].shape == (n, 1)
    with pytest.raises(BackendError, match="score_std"):
        order_outputs({"score": np.zeros((n, 1))}, ["score", "score_std"], "fused.plan")


@pytest.mark.parametrize("n,cap,expect", [
    (10, None, [(0, 10)]), (10, 16, [(0, 10)]), (10, 4, [(0, 4), (4, 8), (8, 10)]), (8, 4, [(0, 4), (4, 8)]),
    (0, 4, []),
])
def test_batch_ranges(n, cap, expect):
    assert batch_ranges(n, cap) == expect


class _Capped(Runner):
    """Logits = sum of pixels; refuses batches above its profile max, like an engine."""
    backend = "fake"

    def __init__(self, name, cap, scale=1.0):
        super().__init__(name)
        self.max_batch, self.scale, self.seen = cap, scale, []

    @property
    def input_spec(self):
        return {"shape": [-1, 1, 2, 2]}

    def infer(self, images):
        if self.max_batch and len(images) > self.max_batch:
            raise AssertionError(f"batch {len(images)} > profile max {self.max_batch}")
        self.seen.append(len(images))
        return self.scale * np.asarray(images).reshape(len(images), -1).sum(1)


def test_ensemble_splits_batches_to_the_smallest_profile():
    x = np.random.default_rng(0).normal(size=(11, 1, 2, 2)).astype(np.float32)
    a, b = _Capped("a", 4), _Capped("b", 8, scale=-0.5)
    with Ensemble([a, b], ["a", "b"], [1.0, 2.0]) as ens:
        assert ens.max_batch == 4
        got = ens.infer(x)
    assert a.seen == b.seen == [4, 4, 3]
    s = x.reshape(11, -1).sum(1)
    p = np.stack([1 / (1 + np.exp(-s)), 1 / (1 + np.exp(0.5 * s / 2.0))], axis=1)
    np.testing.assert_allclose(got.members, p, rtol=1e-6)
    np.testing.assert_allclose(got.score, p.mean(1), rtol=1e-6)


def test_engine_slices_are_aligned_and_padded_to_the_profile_min():
    import torch

    from lenstrt.runtime.trt import _engine_slice

    n = 10 * 4 * 101 * 101  # a row is 163,216 B: rows after the first are not 256-byte aligned
    flat = torch.empty(n + 64)
    skip = (-flat.data_ptr() % 256) // 4  # a batch that starts aligned, as CUDA's allocator gives
    x = flat[skip:skip + n].reshape(10, 4, 101, 101)
    x.copy_(torch.arange(n, dtype=torch.float32).reshape(x.shape))
    assert x[1:3].data_ptr() % 256 != 0
    s = _engine_slice(x, 1, 3, 1)
    assert s.data_ptr() != x[1:3].data_ptr() and torch.equal(s, x[1:3])  # copied, not a misaligned view
    v = _engine_slice(x, 0, 4, 1)
    assert v.data_ptr() == x.data_ptr()  # an aligned view is used as it is
    p = _engine_slice(x, 8, 10, 4)
    assert p.shape == (4, 4, 101, 101) and torch.equal(p[:2], x[8:10]) and not p[2:].any()


# -- one upload shared by the members' streams --------------------------------------------------------------

class _Log(list):
    pass


class _Stream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))


class _Tensor:
    def __init__(self, log, n):
        self.log, self.n = log, n

    def __len__(self):
        return self.n

    def __getitem__(self, s):
        return self

    def record_stream(self, s):
        self.log.append(("keep", s.name))


class _StreamRunner(Runner):
    asynchronous = True

    def __init__(self, name, log):
        super().__init__(name)
        self.log, self.stream = log, _Stream(name, log)

    def activate(self):
        super().activate()

    def infer_async(self, images):
        self.log.append(("enqueue", self.name, type(images).__name__))
        return self.name

    def collect(self, handle):
        self.log.append(("collect", handle))
        return np.zeros(3)


def test_shared_upload_orders_every_member_after_the_copy(monkeypatch):
    """Upload once; each member's stream waits on the upload stream and records the tensor before the
    member's first enqueue; every member is enqueued before any is collected."""
    import lenstrt.runtime.device as device

    log = _Log()

    class FakeUploader:
        def __init__(self, dev):
            self.stream = _Stream("upload", log)

        def __call__(self, images, consumers):
            log.append(("upload",))
            x = _Tensor(log, len(images))
            device.hand_over(x, self.stream, consumers)
            return x

    monkeypatch.setattr(device, "Uploader", FakeUploader)
    rs = [_StreamRunner(n, log) for n in ("m0", "m1", "m2")]
    with Ensemble(rs, ["m0", "m1", "m2"], [1.0] * 3, concurrency="streams", device="cuda") as ens:
        assert ens.info["shared_upload"]
        ens.infer(np.zeros((3, 1, 2, 2), np.float32))
    assert log[0] == ("upload",)
    for name in ("m0", "m1", "m2"):
        wait, keep, enq = log.index(("wait", name, "upload")), log.index(("keep", name)), \
            log.index(("enqueue", name, "_Tensor"))
        assert wait < enq and keep < enq
    last_enqueue = max(i for i, e in enumerate(log) if e[0] == "enqueue")
    first_collect = min(i for i, e in enumerate(log) if e[0] == "collect")
    assert last_enqueue < first_collect


def test_no_shared_upload_on_cpu_or_for_streamless_members():
    log = _Log()
    rs = [_StreamRunner(n, log) for n in ("a", "b")]
    with Ensemble(rs, ["a", "b"], [1.0, 1.0], concurrency="streams", device="cpu") as ens:
        assert not ens.info["shared_upload"]
    with Ensemble([_Capped("a", None), _Capped("b", None)], ["a", "b"], [1.0, 1.0], concurrency="streams",
                  device="cuda") as ens:
        assert not ens.info["shared_upload"] and ens._pool is not None  # ORT-like members run in threads
        assert ens.infer(np.ones((2, 1, 2, 2), np.float32)).score.shape == (2,)


# -- backend choice with a fused bundle ---------------------------------------------------------------------

PLAN = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
H100 = Capabilities(True, "NVIDIA H100", "9.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), "10.13.0.35")


def _bundle(tmp_path, member_plans: bool, fused_plan: bool, fused: bool = True) -> Bundle:
    m = {"schema": "lenstrt-bundle/1", "input": {"shape": [-1, 3, 64, 64]}, "output": {"name": "logits"},
         "members": [{"name": f"m{i}", "arch": "resnet18", "temperature": 1.0,
                      "artifacts": {"onnx": {"path": f"m{i}.onnx"},
                                    **({"plan": {"path": f"m{i}.plan", **PLAN}} if member_plans else {})}}
                     for i in range(2)],
         "fused": {"outputs": ["score", "score_std", "member_scores"],
                   "artifacts": {"onnx": {"path": "f.onnx"},
                                 **({"plan": {"path": "f.plan", **PLAN}} if fused_plan else {})}} if fused else None}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    return Bundle(tmp_path)


def test_fused_serving_needs_the_fused_engine(tmp_path):
    (tmp_path / "a").mkdir()
    members_only = _bundle(tmp_path / "a", member_plans=True, fused_plan=False)
    assert choose_backend("auto", H100, members_only)[:2] == ("trt", "cuda")
    backend, device, why = choose_backend("auto", H100, members_only, fused=True)
    assert (backend, device) == ("ort", "cuda") and "fused graph has no TensorRT engine" in why
    with pytest.raises(BackendError, match="fused graph has no TensorRT engine"):
        choose_backend("trt", H100, members_only, fused=True)
    (tmp_path / "b").mkdir()
    both = _bundle(tmp_path / "b", member_plans=True, fused_plan=True)
    assert choose_backend("trt", H100, both, fused=True)[:2] == ("trt", "cuda")
    (tmp_path / "c").mkdir()
    with pytest.raises(BundleError, match="no fused graph"):
        choose_backend("auto", H100, _bundle(tmp_path / "c", True, False, fused=False), fused=True)


# -- TensorRT build logic -------------------------------------------------------------------------------------

def test_strongly_typed_on_every_tensorrt_and_graph_by_precision():
    from lenstrt.export import tensorrt as trtx

    strongly_typed_bit = 1
    for v in ("10.0.1", "10.8.0", "10.11.0.33", "10.13.0.35"):
        assert trtx.network_flags(v, strongly_typed_bit) == 1 << strongly_typed_bit
    assert trtx.network_flags("11.4.0", strongly_typed_bit) == 0
    assert trtx.source_graph(True) == "fp16" and trtx.source_graph(False) == "fp32"
    assert "set_flag(trt.BuilderFlag.FP16)" not in Path(trtx.__file__).read_text()  # no weak typing


def test_timing_cache_is_keyed_by_gpu_model(tmp_path, monkeypatch):
    from lenstrt.export.tensorrt import BuildOptions, cache_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    h100 = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    h200 = {**h100, "gpu_name": "NVIDIA H200"}
    a, b = cache_path(BuildOptions(), h100), cache_path(BuildOptions(), h200)
    assert a != b and a.parent == b.parent == tmp_path / "lenstrt"
    assert "H100" in a.name and "sm90" in a.name and " " not in a.name and "/" not in a.name[1:]
    assert cache_path(BuildOptions(), {**h100, "tensorrt_version": "10.14.1"}) != a
    assert cache_path(BuildOptions(timing_cache=str(tmp_path / "x.cache")), h100) == tmp_path / "x.cache"


def test_tensorrt_is_imported_in_two_modules_only():
    pat = re.compile(r"^\s*(import tensorrt|from tensorrt)", re.M)
    hits = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lenstrt").rglob("*.py") if pat.search(p.read_text()))
    assert hits == ["lenstrt/export/tensorrt.py", "lenstrt/runtime/trt.py"]


def test_ort_tensorrt_provider_gets_profiles_and_a_cache_outside_the_bundle(bundle_dir, tmp_path, monkeypatch):
    from lenstrt.runtime.ort import default_trt_cache_dir, trt_provider_options

    o = trt_provider_options("images", (3, 64, 64), (1, 16, 256), tmp_path / "c", fp16=False)
    assert o["trt_profile_min_shapes"] == "images:1x3x64x64" and o["trt_profile_opt_shapes"] == "images:16x3x64x64"
    assert o["trt_profile_max_shapes"] == "images:256x3x64x64" and o["trt_fp16_enable"] is False
    assert o["trt_engine_cache_path"] == o["trt_timing_cache_path"] == str(tmp_path / "c")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    onnx_file = Bundle(bundle_dir).path(Bundle(bundle_dir).members[0].artifact("onnx"))
    d = default_trt_cache_dir(onnx_file, "NVIDIA H100")
    assert d.is_relative_to(tmp_path / "home") and not d.is_relative_to(bundle_dir)
    assert d != default_trt_cache_dir(onnx_file, "NVIDIA H200")


# -- NVML: the GPU torch uses, errors degrade -----------------------------------------------------------------

class FakeNvml:
    class NVMLError(Exception):
        pass

    def __init__(self, uuids=None, buses=None, fail_util_after=None):
        self.uuids, self.buses = uuids or {}, buses or {}
        self.fail_after, self.calls, self.shutdowns = fail_util_after, 0, 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByUUID(self, u):
        if u not in self.uuids:
            raise self.NVMLError("not found")
        return self.uuids[u]

    def nvmlDeviceGetHandleByPciBusId(self, b):
        if b not in self.buses:
            raise self.NVMLError("not found")
        return self.buses[b]

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise self.NVMLError("Not Supported (MIG)")
        return type("U", (), {"gpu": 50})()


def test_nvml_handle_follows_the_torch_device():
    from lenstrt.bench.monitor import nvml_handle

    nv = FakeNvml(uuids={"GPU-aaaa": "gpu0", "GPU-bbbb": "gpu1"}, buses={"00000000:3B:00.0": "gpu2"})
    assert nvml_handle(nv, {"index": 0, "uuid": "bbbb"}) == "gpu1"  # CUDA's device 0 is NVML's second GPU
    assert nvml_handle(nv, {"uuid": "GPU-aaaa"}) == "gpu0"
    assert nvml_handle(nv, {"uuid": "cccc", "pci_bus_id": "00000000:3B:00.0"}) == "gpu2"
    with pytest.raises(LookupError, match="GPU-cccc"):
        nvml_handle(nv, {"uuid": "cccc"})


def test_gpu_monitor_degrades_and_always_shuts_nvml_down():
    import time

    from lenstrt.bench.monitor import GpuMonitor

    nv = FakeNvml(uuids={"GPU-aaaa": "h"}, fail_util_after=2)
    with GpuMonitor("cuda", interval_s=0.001, nvml=nv, ids={"uuid": "aaaa"}) as mon:
        t0 = time.time()
        while len(mon.samples) < 3 and time.time() - t0 < 5:
            time.sleep(0.01)
        assert mon._thread.is_alive()  # the utilisation error did not kill the sampler
    s = mon.summary()
    assert len(mon.samples) >= 3 and s["gpu_util_mean_pct"] == 50 and "Not Supported" in s["error"]
    assert [u for _, u in mon.samples[:3]] == [50, 50, None]  # memory still sampled after utilisation fails
    assert nv.shutdowns == 1
    nv2 = FakeNvml()
    with GpuMonitor("cuda", nvml=nv2, ids={"uuid": "zzzz"}) as mon2:
        pass
    assert mon2.summary() == {"error": mon2.error} and "GPU-zzzz" in mon2.error and nv2.shutdowns == 1
    nv3 = FakeNvml()
    with GpuMonitor("cpu", nvml=nv3) as mon3:
        pass
    assert mon3.summary() is None and nv3.shutdowns == 0


# -- CUDA RNG in checkpoints ----------------------------------------------------------------------------------

def test_cuda_generator_is_saved_and_restored(monkeypatch):
    import torch

    from lenstrt.train.trainer import restore_rng_state, rng_state

    cuda_state = torch.tensor([1, 2, 3], dtype=torch.uint8)
    asked, restored = [], {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda dev: asked.append(dev) or cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, dev: restored.update(state=s, dev=dev))
    state = rng_state("cuda:1")
    assert asked == ["cuda:1"] and state["cuda"] is cuda_state  # the training GPU's, not every GPU's
    assert torch.equal(state["cpu"], torch.get_rng_state()) and "cuda" not in rng_state("cpu")
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    saved = rng_state("cuda")
    torch.rand(3)
    restore_rng_state(saved, "cuda:0")  # resumed on another GPU index: restored onto the one it trains on
    assert torch.equal(torch.rand(3), expected) and restored == {"state": cuda_state, "dev": "cuda:0"}
    torch.manual_seed(1)
    old = torch.get_rng_state()  # a checkpoint from before this change: the bare CPU state
    torch.rand(3)
    restore_rng_state(old, "cpu")
    assert torch.equal(torch.rand(3), expected)


# -- engine validation in export, with ONNX Runtime standing in for TensorRT ----------------------------------

def _fake_tensorrt(monkeypatch, noise: float = 0.0):
    """TensorRT 'builds' an engine by copying the source graph and 'runs' it with ONNX Runtime."""
    import shutil

    import lenstrt.export.pipeline as pipe
    from lenstrt.export import tensorrt as trtx
    from lenstrt.runtime.ort import OrtRunner

    built = []

    def build(tmp, src_rel, rel_plan, input_name, chw, batch, fp16, log):
        shutil.copyfile(tmp / src_rel, tmp / rel_plan)
        built.append((src_rel, rel_plan))
        return {"source_graph": trtx.source_graph(fp16), "precision": "fp16" if fp16 else "fp32",
                **PLAN, "build": {"strongly_typed": True}}

    def run(plan, entry, images, outputs):
        with OrtRunner("engine", plan, "cpu", "extended", output_names=outputs) as r:
            out = r.infer(images)
        return out + noise if isinstance(out, np.ndarray) else out

    monkeypatch.setattr(trtx, "status", lambda: (True, "TensorRT (fake)"))
    monkeypatch.setattr(pipe, "_build_engine", build)
    monkeypatch.setattr(pipe, "_run_engine", run)
    return built


def test_export_builds_and_validates_member_and_fused_engines(run_dir, tmp_path, monkeypatch):
    from lenstrt.export.pipeline import export_bundle
    from lenstrt.export.triton import write_repository

    built = _fake_tensorrt(monkeypatch)
    m = export_bundle([str(run_dir)], tmp_path / "b", fp16=True, fuse=True, batch=(1, 16, 64), n_val=64,
                      log=lambda *a: None)
    assert [b[1] for b in built] == ["resnet18-s0.plan", "vit_tiny-s1000.plan", "ensemble.fused.plan"]
    assert all(src.endswith(".fp16.onnx") for src, _ in built)  # fp16 engines come from the mixed graph
    for mem in m["members"]:
        plan = mem["artifacts"]["plan"]
        assert plan["precision"] == "fp16" and plan["agreement"]["n"] == 64
        assert plan["agreement"]["max_abs_prob_diff"] <= 1e-2
    assert m["fused"]["artifacts"]["plan"]["agreement"]["max_abs_prob_diff"] <= 1e-2
    assert [e["member"] for e in m["engines"]] == ["resnet18-s0", "vit_tiny-s1000", "fused"]
    write_repository(tmp_path / "b", tmp_path / "triton")
    assert 'platform: "tensorrt_plan"' in (tmp_path / "triton" / "ensemble_fused" / "config.pbtxt").read_text()


def test_export_refuses_an_engine_that_disagrees(run_dir, tmp_path, monkeypatch):
    from lenstrt.export.pipeline import export_bundle

    _fake_tensorrt(monkeypatch, noise=3.0)  # a logit shift of 3 moves probabilities by up to ~0.6
    with pytest.raises(ExportError, match=r"resnet18-s0: TensorRT fp16 engine max \|prob diff\|"):
        export_bundle([str(run_dir)], tmp_path / "b", fp16=True, batch=(1, 16, 64), n_val=32, log=lambda *a: None)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp*"))


def test_gate_failure():
    from lenstrt.export.pipeline import gate_failure

    assert gate_failure({"max_abs_prob_diff": 0.005}, 1e-2, 0.002) is None
    assert "max |prob diff| 2.00e-02 (tol 0.01)" in gate_failure({"max_abs_prob_diff": 0.02}, 1e-2, 0.002)
    working = {"max_abs_prob_diff": 0.001, "auc_reference": 0.99, "auc": 0.98, "auc_drop": 0.01}
    assert "AUC drop 0.0100" in gate_failure(working, 1e-2, 0.002)
    weak = {"max_abs_prob_diff": 0.001, "auc_reference": 0.6, "auc": 0.59, "auc_drop": 0.01}
    assert gate_failure(weak, 1e-2, 0.002) is None and weak["auc_drop_enforced"] is False


def test_trt_runner_releases_what_a_failed_activation_made():
    """A capture or check that fails halfway through activate() must not leave engines and contexts on the GPU
    (serve would go on to the next backend with them still held)."""
    from lenstrt.errors import BackendError
    from lenstrt.runtime.trt import TrtRunner

    r = TrtRunner("m", "m.plan", {})

    def half_way():
        r.runtime, r.engine, r.context, r._graph_engine = object(), object(), object(), object()
        raise BackendError("m.plan: CUDA graph capture failed")

    r._set_up = half_way
    with pytest.raises(BackendError, match="capture failed"):
        r.activate()
    assert not r.active
    assert not any(hasattr(r, a) for a in ("runtime", "engine", "context", "_graph_engine"))


@pytest.mark.parametrize("size,frame,refused", [(64, 4, False), (243, 4, False), (244, 4, True), (200, 8, True),
                                                (6, 4, False)])
def test_cutouts_too_large_for_tensorrts_topk_are_refused_before_a_build(size, frame, refused):
    from lenstrt.export import tensorrt as trtx

    why = trtx.topk_problem(size, frame)
    assert (why is not None) is refused
    if refused:
        assert f"{size} px" in why and "3840" in why and "ONNX Runtime" in why
