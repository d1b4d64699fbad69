"""CUDA paths: skipped (with the reason) where there is no GPU; run them with `pytest -m gpu` on one
(`scripts/gpu_check.sh` does, with the rest of the GPU checks)."""

import contextlib

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@contextlib.contextmanager
def no_tf32():
    """fp32 on CUDA means TF32 convolutions by default (cuDNN), ~1e-3 relative: comparisons against the
    CPU turn it off, so their tolerance can stay an fp32 one."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_half"])
def test_amp_training_steps_on_cuda(sim_dir, tmp_path, arch):
    import torch

    from lenstrt import checkpoint as ck
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    m = train(TrainingConfig(arch=(arch,), max_steps=10, batch_size=16, val_every=5), DataConfig(),
              [str(sim_dir)], tmp_path, device="cuda", progress=False)
    assert m["precision"]["dtype"] == "float16" and m["precision"]["grad_scaler"]
    c = ck.load(tmp_path / f"{arch}-s0" / "best.pt")
    assert all(np.isfinite(v.float().numpy()).all() for v in c["state_dict"].values())
    last = ck.load(tmp_path / f"{arch}-s0" / "last.pt")
    assert "cuda" in last["rng_state"]  # dropout on CUDA draws from the CUDA generators
    # where it trained: the GPU's name, as evaluate's report will quote it
    assert c["host"]["gpu"] == m["host"]["gpu"] == torch.cuda.get_device_name(0)


def test_warm_start_on_cuda(sim_dir, run_dir, tmp_path):
    """--init on a GPU: the source's (CPU) weights reach the CUDA model, which trains from them (lr 0: the
    weights cannot move, so best.pt must hold the source's exactly; BatchNorm-free ViT)."""
    import torch

    from lenstrt import checkpoint as ck
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=4, batch_size=16, val_every=2, lr=0.0, init=str(run_dir))
    m = train(cfg, DataConfig(), [str(sim_dir)], tmp_path, device="cuda", progress=False)
    assert m["init"][0]["arch"] == "vit_tiny"
    src = ck.load(run_dir / "vit_tiny-s1000" / "best.pt")["state_dict"]
    got = ck.load(tmp_path / "vit_tiny-s0" / "best.pt")["state_dict"]
    for k in src:
        assert torch.equal(src[k], got[k]), k


def test_cuda_resume_is_exact(sim_dir, tmp_path):
    """Stopped at step 4 and resumed == uninterrupted, weight for weight, with dropout and augmentation on
    the GPU (needs the CUDA RNG state in the checkpoint)."""
    import torch

    from lenstrt import checkpoint as ck
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import Trainer, load_training_data, split

    cfg = TrainingConfig(arch=("vit_tiny",), max_steps=8, batch_size=16, val_every=4, dropout=0.2, amp=False)
    tr, va = split(load_training_data([str(sim_dir)]), cfg.val_fraction, cfg.seed)
    torch.backends.cudnn.deterministic = True
    t = Trainer(cfg, DataConfig(num_workers=0), "cuda", progress=False)
    t.train_member("vit_tiny", 0, tr, va, tmp_path / "a")
    t.train_member("vit_tiny", 0, tr, va, tmp_path / "b", _stop_at_step=4)
    t.train_member("vit_tiny", 0, tr, va, tmp_path / "b", resume=True)
    a, b = ck.load(tmp_path / "a" / "last.pt")["state_dict"], ck.load(tmp_path / "b" / "last.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_cuda_streams_match_sequential(bundle_dir, sim_dir):
    from lenstrt.bundle import Bundle
    from lenstrt.data.readers import iter_batches
    from lenstrt.runtime.select import build_ensemble

    x = next(iter_batches(sim_dir, 64)).images
    b = Bundle(bundle_dir)
    with no_tf32():
        with build_ensemble(b, "torch", "cuda", concurrency="streams", amp=False) as e:
            assert e.info["shared_upload"]  # one upload, read by both members' streams
            streams = e.infer(x).score
            # two batches in flight, as serve keeps them: results come back in order, unchanged
            h1, h2 = e.submit(x), e.submit(x[::-1].copy())
            np.testing.assert_allclose(e.result(h1).score, streams, atol=1e-6)
            np.testing.assert_allclose(e.result(h2).score, streams[::-1], atol=1e-6)
        with build_ensemble(b, "torch", "cuda", concurrency="sequential", amp=False) as e:
            seq = e.infer(x).score
    with build_ensemble(b, "torch", "cpu", concurrency="sequential") as e:
        cpu = e.infer(x).score
    np.testing.assert_allclose(streams, seq, atol=1e-6)
    np.testing.assert_allclose(streams, cpu, atol=1e-4)


@pytest.mark.parametrize("tta", [False, True])
def test_evaluate_on_cuda_equals_cpu(run_dir, sim_dir, tmp_path, tta):
    # `lenstrt evaluate --device cuda [--tta]`: the scores it writes (scores.parquet) are the CPU's; with --tta
    # the 8 views are taken on the host array (negative strides) before they go to the GPU
    import pyarrow.parquet as pq

    from lenstrt.train.evaluate import evaluate

    with no_tf32():
        evaluate(run_dir, [str(sim_dir)], tmp_path / "g", device="cuda", batch_size=32, tta=tta)
    evaluate(run_dir, [str(sim_dir)], tmp_path / "c", device="cpu", batch_size=32, tta=tta)
    g, c = (pq.read_table(tmp_path / d / "scores.parquet") for d in ("g", "c"))
    assert g.column("id").to_pylist() == c.column("id").to_pylist() and g.num_rows == 96
    np.testing.assert_allclose(g.column("score").to_numpy(), c.column("score").to_numpy(), atol=1e-4)


def test_serve_on_cuda_streams_equals_cpu(bundle_dir, sim_dir, tmp_path):
    import pyarrow.parquet as pq

    from lenstrt.serve.pipeline import ServeOptions, serve

    with no_tf32():
        g = serve(bundle_dir, [str(sim_dir)], tmp_path / "g", ServeOptions(backend="torch", amp=False, batch_size=16,
                                                                         unit_rows=40), progress=False)
    c = serve(bundle_dir, [str(sim_dir)], tmp_path / "c", ServeOptions(backend="ort", batch_size=16, unit_rows=40),
              progress=False)
    assert g["device"] == "cuda" and g["ensemble"]["concurrency"] == "streams"
    # two batches in flight: busy time is a union of intervals, so end to end cannot beat inference
    assert g["throughput"]["pipeline_efficiency"] <= 1.05
    assert g["counts"]["catalog_rows"] == c["counts"]["catalog_rows"] == 96
    sg = pq.read_table(tmp_path / "g" / "catalog").sort_by("id").column("score").to_numpy()
    sc = pq.read_table(tmp_path / "c" / "catalog").sort_by("id").column("score").to_numpy()
    np.testing.assert_allclose(sg, sc, atol=1e-4)


def test_gpu_monitor_watches_the_torch_device():
    import torch

    from lenstrt.bench.monitor import GpuMonitor, torch_device_ids

    ids = torch_device_ids("cuda")
    assert ids["name"] == torch.cuda.get_device_name()
    with GpuMonitor("cuda", interval_s=0.01) as mon:
        x = torch.randn(4096, 4096, device="cuda")
        for _ in range(50):
            x = x @ x.T / 4096
        torch.cuda.synchronize()
    s = mon.summary()
    assert s is not None and (s.get("gpu_mem_peak_gib", 0) > 0 or "error" in s)


def test_bench_splits_gpu_time(bundle_dir, tmp_path):
    from lenstrt.bench.harness import BenchSpec, run_bench

    rep = run_bench(bundle_dir, BenchSpec(backends=("torch",), batch_sizes=(64,), ensemble=("separate",),
                                          warmup_ms=50, duration_s=0.5, n_agree=32), progress=lambda *a: None)
    split = rep["rows"][-1]["gpu_time_split"]
    assert split and abs(sum(split.values()) - 1) < 1e-6 and split["compute_share"] > 0
