"""CUDA paths: skipped (with the reason) where there is no GPU; run them with `pytest -m gpu` on one."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_amp_training_steps_on_cuda(sim_dir, tmp_path):
    from lenstrt import checkpoint as ck
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    m = train(TrainingConfig(arch=("resnet18",), max_steps=10, batch_size=16, val_every=5), DataConfig(),
              [str(sim_dir)], tmp_path, device="cuda", progress=False)
    assert m["precision"]["dtype"] == "float16" and m["precision"]["grad_scaler"]
    c = ck.load(tmp_path / "resnet18-s0" / "best.pt")
    assert all(np.isfinite(v.float().numpy()).all() for v in c["state_dict"].values())


def test_cuda_streams_match_sequential(bundle_dir, sim_dir):
    from lenstrt.bundle import Bundle
    from lenstrt.data.readers import iter_batches
    from lenstrt.runtime.select import build_ensemble

    x = next(iter_batches(sim_dir, 64)).images
    b = Bundle(bundle_dir)
    with build_ensemble(b, "torch", "cuda", concurrency="streams", amp=False) as e:
        streams = e.infer(x).score
    with build_ensemble(b, "torch", "cuda", concurrency="sequential", amp=False) as e:
        seq = e.infer(x).score
    with build_ensemble(b, "torch", "cpu", concurrency="sequential") as e:
        cpu = e.infer(x).score
    np.testing.assert_allclose(streams, seq, atol=1e-6)
    np.testing.assert_allclose(streams, cpu, atol=1e-4)


def test_bench_splits_gpu_time(bundle_dir, tmp_path):
    from lenstrt.bench.harness import BenchSpec, run_bench

    rep = run_bench(bundle_dir, BenchSpec(backends=("torch",), batch_sizes=(64,), ensemble=("separate",),
                                          warmup_ms=50, duration_s=0.5, n_agree=32), progress=lambda *a: None)
    split = rep["rows"][-1]["gpu_time_split"]
    assert split and abs(sum(split.values()) - 1) < 1e-6 and split["compute_share"] > 0
