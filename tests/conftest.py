"""Shared fixtures, and the gpu/trt markers: such tests are skipped, with the reason, where the
hardware or library is missing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_cuda = _cuda()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))
        if "trt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU (pip install 'lenstrt[trt]')"))


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory) -> Path:
    """A small simulated LSST-like data set: 2 shards, 96 cutouts, all three kinds."""
    from lenstrt.data.simulate import SimSpec, simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(SimSpec(n=96, seed=7, shard_size=48), out, progress=False)
    return out


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def run_dir(sim_dir, tmp_path_factory) -> Path:
    """A two-member run (resnet18 + a tiny ViT), 30 steps each."""
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainingConfig(arch=("resnet18", "vit_tiny"), max_steps=30, batch_size=16, val_every=15, warmup_steps=5,
                         lr=2e-3)
    train(cfg, DataConfig(), [str(sim_dir)], out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="session")
def bundle_dir(run_dir, tmp_path_factory) -> Path:
    """The run exported with --fp16 --fuse (ONNX only here: no TensorRT)."""
    from lenstrt.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "b"
    export_bundle([str(run_dir)], out, fp16=True, fuse=True, batch=(1, 16, 256), n_val=96, log=lambda *a: None)
    return out
