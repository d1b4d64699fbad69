"""Shared fixtures, and the gpu/trt markers: such tests are skipped, with the reason, where the
hardware or library is missing.

Two model fixtures: `run_dir`/`bundle_dir` are near-random (30 steps on 96 cutouts: validation AUC of a
coin flip, temperatures of 2-12), good for contracts and plumbing only; `good_run_dir`/`good_bundle_dir`
are a model that works (two vit_tiny members trained on an easy simulated set to validation AUC > 0.95
on 300 rows, temperatures away from 1 (host-dependent: docs/testing.md), a training lens fraction of ~0.35), so calibration, fusion,
prevalence and the export's AUC gate are exercised for real. See docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("OMP_NUM_THREADS", "2")


def load_script(path: Path, name: str):
    """A script outside the package (benchmarks/, scripts/) as a module, for tests of its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_report_header(config):
    # The suite writes ~2.6 GB under the temp dir at its peak (docs/testing.md): say what is free, so that a
    # "No space left on device" deep in a test reads as the machine's, not the code's
    import tempfile

    tmp = tempfile.gettempdir()
    return f"lenstrt: {shutil.disk_usage(tmp).free / 2**30:.1f} GiB free in {tmp} (the suite needs ~3)"


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
    """A small simulated LSST-like data set: 2 shards, 96 cutouts, lenses, galaxies and companions.

    Drawn from `lsst-gri` as it was before 2026-11-30 (theta_E 0.8-2.2", the earlier lens-galaxy sizes, arcs
    from S/N 60, two negative kinds, arc-like companions up to 0.6"), frozen here: the toy runs trained on it (30 steps) must learn something, and the survey's
    radii and big lens galaxies of today's default are not learnt in 30 steps. The default itself is tested in
    test_simulate.py and by `make demo`."""
    import yaml

    from lenstrt.data.simulate import SimSpec, simulate

    preset = yaml.safe_load((REPO / "configs" / "surveys" / "lsst-gri.yaml").read_text())
    preset["population"].update(theta_e=[0.8, 2.2], lens_size=[0.3, 0.9], arc_snr=[60.0, 2000.0],
                                negative_mix={"galaxy": 0.5, "companion": 0.5}, companion_arc_size=[0.1, 0.6])
    path = tmp_path_factory.mktemp("preset") / "lsst-gri.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    out = tmp_path_factory.mktemp("sim")
    simulate(SimSpec(n=96, seed=7, shard_size=48, survey=str(path)), out, progress=False)
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


# -- a model that works ---------------------------------------------------------------------------------
# An easy lsst-gri-like set: 32 px cutouts, lenses with bright-enough arcs, no hard negatives or nuisances,
# 35% lenses (so a prevalence correction that assumes 50% is visibly wrong).
EASY_SURVEY = {
    "name": "easy-gri", "pixel_scale": 0.2, "image_size": 32, "supersample": 2, "reference_band": "i",
    "bands": [
        {"name": "g", "zero_point": 28.30, "sky_mag": 22.26, "seeing": 0.77, "exposure_time": 15.0, "n_exposures": 200,
         "read_noise": 10.0},
        {"name": "r", "zero_point": 28.13, "sky_mag": 21.20, "seeing": 0.73, "exposure_time": 15.0, "n_exposures": 460,
         "read_noise": 10.0},
        {"name": "i", "zero_point": 27.79, "sky_mag": 20.48, "seeing": 0.71, "exposure_time": 15.0, "n_exposures": 460,
         "read_noise": 10.0},
    ],
    "population": {"theta_e": [1.0, 1.8], "lens_mag": [19.5, 20.5], "lens_colors": {"g": 1.4, "r": 0.45, "i": 0.0},
                   "source_mag": [23.0, 25.0], "source_colors": {"g": 0.25, "r": 0.1, "i": 0.0},
                   "companion_mag": [21.5, 25.0], "color_scatter": 0.1, "arc_snr": [400.0, 4000.0],
                   "negative_mix": {"galaxy": 1.0}, "lens_with_companions": 0.0, "lens_size": [0.3, 0.9]},
    "nuisances": {"seeing_scatter": 0.0, "band_seeing_scatter": 0.0, "moffat_fraction": 0.0, "psf_ellipticity": 0.0,
                  "band_offset": 0.0, "sky_scatter": 0.0, "depth_scatter": 0.0, "sky_residual": 0.0, "neighbours": 0.0,
                  "stars": 0.0, "saturated": 0.0, "cosmic_rays": 0.0, "masked": 0.0},
}
EASY_LENS_FRACTION = 0.35
GOOD_TRAINING = dict(arch=("vit_tiny",), members=2, max_steps=300, batch_size=32, val_every=100, warmup_steps=10,
                     lr=3e-3, weight_decay=0.0, val_fraction=0.25, amp=False)


def _built(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(dir)` once per session, in a temp dir; or, with LENSTRT_TEST_CACHE set (`make mutation`),
    once per cache dir, reused by later sessions (the mutation run starts pytest once per mutant)."""
    cache = os.environ.get("LENSTRT_TEST_CACHE")
    if not cache:
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    out = Path(cache) / name
    if not (out / ".complete").exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        build(out)
        (out / ".complete").touch()
    return out


@pytest.fixture(scope="session")
def easy_survey(tmp_path_factory) -> str:
    """Path of the easy survey preset (a YAML file, as `lenstrt simulate --survey PATH` takes)."""
    import yaml

    def build(d: Path) -> None:
        (d / "easy-gri.yaml").write_text(yaml.safe_dump(EASY_SURVEY, sort_keys=False))

    return str(_built(tmp_path_factory, "easy_survey", build) / "easy-gri.yaml")


@pytest.fixture(scope="session")
def good_sim_dir(easy_survey, tmp_path_factory) -> Path:
    """1,200 easy cutouts in 2 shards: the training set of the good model (900 train / 300 validation)."""
    from lenstrt.data.simulate import SimSpec, simulate

    return _built(tmp_path_factory, "good_sim", lambda d: simulate(
        SimSpec(n=1200, seed=11, survey=easy_survey, shard_size=600, lens_fraction=EASY_LENS_FRACTION,
                companion_fraction=0.0), d, progress=False))


@pytest.fixture(scope="session")
def good_test_dir(easy_survey, tmp_path_factory) -> Path:
    """256 more easy cutouts (another seed) in 2 shards of 128: what the good model is exported and served on."""
    from lenstrt.data.simulate import SimSpec, simulate

    return _built(tmp_path_factory, "good_test", lambda d: simulate(
        SimSpec(n=256, seed=12, survey=easy_survey, shard_size=128, lens_fraction=EASY_LENS_FRACTION,
                companion_fraction=0.0), d, progress=False))


@pytest.fixture(scope="session")
def good_run_dir(good_sim_dir, tmp_path_factory) -> Path:
    """Two vit_tiny members (seeds 0 and 1), 300 steps each, fp32: validation AUC > 0.95 on 300 rows."""
    from lenstrt.config import DataConfig, TrainingConfig
    from lenstrt.train.trainer import train

    return _built(tmp_path_factory, "good_run", lambda d: train(
        TrainingConfig(**GOOD_TRAINING), DataConfig(), [str(good_sim_dir)], d, device="cpu", progress=False))


@pytest.fixture(scope="session")
def good_bundle_dir(good_run_dir, good_test_dir, tmp_path_factory) -> Path:
    """The good run exported with --fp16 --fuse, validated on the 256 labelled test cutouts (so the fp16
    AUC gate is enforced: reference AUC >= 0.9)."""
    from lenstrt.export.pipeline import export_bundle

    return _built(tmp_path_factory, "good_bundle", lambda d: export_bundle(
        [str(good_run_dir)], d / "b", fp16=True, fuse=True, batch=(1, 16, 256), data=[str(good_test_dir)], n_val=256,
        log=lambda *a: None)) / "b"


@pytest.fixture(scope="module")
def moto_url():
    """A moto server on 127.0.0.1: the real AWS HTTP API, offline (cloud tests)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def fake_credentials(monkeypatch):
    """Fake AWS keys, so a test can check they never reach user data or output."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super/secret/value/never/to/be/seen")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
