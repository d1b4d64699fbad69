"""serve --ray on a local Ray cluster started by the test (2 CPUs, no dashboard), CPU backend."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="ray[data] is in the dev extra")

from lenstrt.serve.pipeline import ServeOptions, serve  # noqa: E402
from lenstrt.serve.ray import serve_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _table(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("*.parquet"))]).sort_by("id")


def _quiet(*a):
    pass


def test_ray_output_equals_single_machine(cluster, bundle_dir, sim_dir, tmp_path):
    opts = ServeOptions(backend="ort", unit_rows=24)
    serve(bundle_dir, [str(sim_dir)], tmp_path / "plain", opts, progress=False, log=_quiet)
    s = serve_ray(bundle_dir, [str(sim_dir)], tmp_path / "ray", opts, address=None, workers=2, progress=False, log=_quiet)
    a, b = _table(tmp_path / "plain"), _table(tmp_path / "ray")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column_names == b.column_names
    for col in ("score", "score_std", "score_resnet18-s0", "score_vit_tiny-s1000"):
        np.testing.assert_allclose(a.column(col).to_numpy(), b.column(col).to_numpy(), atol=1e-6)
    assert a.column("index").to_pylist() == b.column("index").to_pylist()
    assert s["counts"]["catalog_rows"] == 96 and s["ray"]["workers"] == 2
    assert sum(w["rows"] for w in s["ray"]["per_worker"].values()) == 96
    assert (tmp_path / "ray" / "candidates.csv").is_file()


def _actor_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmd and b"_ScoreUnits" in cmd:
                pids.append(int(d.name))
    return pids


def test_killed_worker_still_exactly_once(cluster, bundle_dir, sim_dir, tmp_path):
    out = tmp_path / "ray"
    result: dict = {}

    def run():
        try:
            result["s"] = serve_ray(bundle_dir, [str(sim_dir)], out, ServeOptions(backend="torch", unit_rows=4,
                                                                                  batch_size=4),
                                    address=None, workers=2, progress=False, log=_quiet)
        except BaseException as exc:  # surfaced below
            result["e"] = exc

    t = threading.Thread(target=run)
    t.start()
    killed = None
    deadline = time.time() + 180
    while time.time() < deadline and t.is_alive():
        parts = list((out / "catalog").glob("part-*")) if (out / "catalog").exists() else []
        pids = _actor_pids()
        if len(parts) >= 2 and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    t.join(300)
    assert "e" not in result, result.get("e")
    assert killed is not None, "no worker was killed (the run ended too early)"
    ids = _table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96


def test_bad_shard_recorded(cluster, bundle_dir, sim_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sim_dir / "shard-00000.h5", data / "a.h5")
    shutil.copy(sim_dir / "shard-00001.h5", data / "b.h5")
    # corrupt b.h5 after the scan: truncate the images so that reading its rows fails in the worker
    raw = (data / "b.h5").read_bytes()
    (data / "b.h5").write_bytes(raw[: len(raw) // 3])
    s = serve_ray(bundle_dir, [str(data)], tmp_path / "out", ServeOptions(backend="ort"), address=None, workers=1,
                  progress=False, log=_quiet)
    assert s["counts"]["catalog_rows"] == 48 and s["counts"]["errors_recorded"] == 1
    assert "b.h5" in (tmp_path / "out" / "errors.jsonl").read_text()


def test_without_ray_is_one_clear_error(monkeypatch, bundle_dir, sim_dir, tmp_path):
    import builtins

    from lenstrt.errors import ConfigError

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match=r"pip install 'lenstrt\[ray\]'"):
        serve_ray(bundle_dir, [str(sim_dir)], tmp_path, ServeOptions(), progress=False, log=_quiet)
