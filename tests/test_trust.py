"""Trust what is served (issue #14): verified bundles, manifest paths inside the bundle, one run per
output directory, graceful preemption, one-line errors for unusable outputs. The lock and signal tests
drive real `lenstrt serve` subprocesses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lenstrt.bundle import Bundle
from lenstrt.cli.main import cli
from lenstrt.errors import BundleError, InputError
from lenstrt.serve.pipeline import ServeOptions, serve

QUIET = {"progress": False, "log": lambda *a: None}


@pytest.fixture()
def bundle_copy(bundle_dir, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend,artifact", [("ort", "resnet18-s0.onnx"), ("torch", "checkpoints/resnet18-s0.pt")])
def test_a_tampered_artifact_is_refused(bundle_copy, sim_dir, tmp_path, backend, artifact):
    _flip_middle_byte(bundle_copy / artifact)
    with pytest.raises(BundleError, match=f"{artifact}: sha256 does not match the manifest"):
        serve(bundle_copy, [str(sim_dir)], tmp_path / "out", ServeOptions(backend=backend), **QUIET)
    assert not list((tmp_path / "out" / "catalog").glob("part-*"))


def test_verify_command(bundle_copy):
    ok = CliRunner().invoke(cli, ["verify", str(bundle_copy)])
    assert ok.exit_code == 0 and "files" in ok.output and "verified" in ok.output and "BAD" not in ok.output
    _flip_middle_byte(bundle_copy / "vit_tiny-s1000.fp16.onnx")
    bad = CliRunner().invoke(cli, ["verify", str(bundle_copy)])
    assert bad.exit_code == 1
    assert [ln.split()[1] for ln in bad.output.splitlines() if ln.startswith("BAD")] == ["vit_tiny-s1000.fp16.onnx"]
    assert "1 of" in bad.output and "failed verification" in bad.output


@pytest.mark.parametrize("evil", ["../evil/x.onnx", "/etc/passwd"])
def test_manifest_paths_must_stay_inside_the_bundle(bundle_copy, tmp_path, evil):
    (tmp_path / "evil").mkdir()
    shutil.copyfile(bundle_copy / "resnet18-s0.onnx", tmp_path / "evil" / "x.onnx")
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["members"][0]["artifacts"]["onnx"]["path"] = evil
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    b = Bundle(bundle_copy)
    with pytest.raises(BundleError, match="points outside the bundle"):
        b.path(b.members[0].artifact("onnx"))
    assert not all(r["ok"] for r in b.verify())


def test_an_unusable_out_is_one_line(bundle_dir, sim_dir, tmp_path):
    res = CliRunner().invoke(cli, ["serve", "--bundle", str(bundle_dir), "--input", str(sim_dir), "--out",
                                   "/proc/forbidden", "-q"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1
    assert "/proc/forbidden: cannot be used as --out" in lines[0] and "Traceback" not in res.output
    (tmp_path / "a_file").write_text("x")  # a file where a directory is expected (the API; click checks the CLI)
    with pytest.raises(InputError, match="a_file/sub: cannot be used as --out"):
        serve(bundle_dir, [str(sim_dir)], tmp_path / "a_file" / "sub", **QUIET)


def test_info_prints_the_extra_in_brackets():
    res = CliRunner().invoke(cli, ["info"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "lenstrt[trt]" in res.output


# -- real subprocesses: lock and signals ------------------------------------------------------------------

@pytest.fixture(scope="module")
def many(tmp_path_factory, sim_dir):
    """960 cutouts (the simulated 96, ten times, with their own ids) so that a run lasts long enough."""
    from lenstrt.data.readers import load_all

    d = load_all(sorted(sim_dir.glob("*.h5")))
    out = tmp_path_factory.mktemp("many") / "many.npy"
    np.save(out, np.concatenate([d["images"]] * 10))
    return out


def _cmd(bundle_dir, inp, out, readers=1):
    return [sys.executable, "-m", "lenstrt.cli.main", "serve", "--bundle", str(bundle_dir), "--input", str(inp),
            "--out", str(out), "--backend", "ort", "--unit-rows", "32", "--batch-size", "4", "-q",
            "--readers", str(readers)]


def _start(cmd):
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_units(proc, out, n, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (out / "ledger.jsonl").exists() and sum(1 for _ in open(out / "ledger.jsonl")) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("the run ended or stalled before it could be signalled: " + (proc.stderr.read() or "")[-500:])


def _rows(out):
    ids = pq.read_table(out / "catalog").column("id").to_pylist()
    return len(ids), len(set(ids))


def test_second_run_on_the_same_out_is_refused_and_a_dead_lock_taken_over(bundle_dir, many, tmp_path):
    out = tmp_path / "out"
    first = _start(_cmd(bundle_dir, many, out))
    _wait_for_units(first, out, 1)
    second = subprocess.run(_cmd(bundle_dir, many, out), capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and f"pid {first.pid}" in second.stderr and "another lenstrt serve" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = subprocess.run(_cmd(bundle_dir, many, out), capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    assert _rows(out) == (960, 960)


@pytest.mark.parametrize("signum,code,readers", [(signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 1),
                                                 (signal.SIGTERM, 143, 2)])
def test_a_signal_drains_commits_and_resumes(bundle_dir, many, tmp_path, signum, code, readers):
    out = tmp_path / "out"
    proc = _start(_cmd(bundle_dir, many, out, readers))
    _wait_for_units(proc, out, 2)
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err
    assert "rerun the same command to resume" in err and signal.Signals(signum).name in err
    done = sum(1 for _ in open(out / "ledger.jsonl"))
    assert 2 <= done < 30
    assert json.loads((out / "summary.json").read_text())["counts"]["catalog_rows"] == 32 * done
    res = subprocess.run(_cmd(bundle_dir, many, out), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert _rows(out) == (960, 960)


def test_a_second_signal_stops_at_once_still_exactly_once(bundle_dir, many, tmp_path):
    out = tmp_path / "out"
    proc = _start(_cmd(bundle_dir, many, out))
    _wait_for_units(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    res = subprocess.run(_cmd(bundle_dir, many, out), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert _rows(out) == (960, 960)


def test_reader_processes_give_the_same_catalog(bundle_dir, sim_dir, tmp_path):
    tabs = []
    for r in (1, 2):
        s = serve(bundle_dir, [str(sim_dir)], tmp_path / f"r{r}", ServeOptions(backend="ort", readers=r, unit_rows=16,
                                                                              batch_size=8), **QUIET)
        assert s["counts"]["catalog_rows"] == 96 and s["options"]["readers"] == r
        tabs.append(pq.read_table(tmp_path / f"r{r}" / "catalog").sort_by("id"))
    assert tabs[0].column("id").to_pylist() == tabs[1].column("id").to_pylist()
    np.testing.assert_array_equal(tabs[0].column("score").to_numpy(), tabs[1].column("score").to_numpy())
    np.testing.assert_array_equal(tabs[0].column("index").to_numpy(), tabs[1].column("index").to_numpy())


def test_drain_finishes_started_units_and_drops_new_ones():
    from lenstrt.serve.readers import Drain

    g = Drain()
    assert g.admit("a", False, False) and g.admit("b", False, False)  # two units started by two readers
    assert g.admit("c", False, True) is False  # a signal: a new unit is dropped...
    assert g.admit("a", True, True) is True  # ...started ones run to their last batch
    assert g.admit("b", False, True) is True and g.admit("b", True, True) is True
    assert g.admit("c", True, True) is None  # nothing open: stop reading


def test_a_changed_input_is_refused_on_resume_or_rescored(bundle_dir, tmp_path, rng):
    """A shard replaced in place by other cutouts (same name, same row count) must not keep old scores."""
    inp = tmp_path / "in"
    inp.mkdir()
    a = rng.normal(size=(24, 3, 64, 64)).astype(np.float32)
    np.save(inp / "a.npy", a)
    np.save(inp / "b.npy", rng.normal(size=(24, 3, 64, 64)).astype(np.float32))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lenstrt.cli.main", "serve", "--bundle", str(bundle_dir), "--input", str(inp),
           "--out", str(out), "--backend", "ort", "--unit-rows", "8", "-q"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    before = pq.read_table(out / "catalog").to_pandas().set_index("id")["score"]
    new_b = rng.normal(size=(24, 3, 64, 64)).astype(np.float32) * 3 + 1
    np.save(inp / "b.npy", new_b)
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 1 and "b.npy: changed since" in res.stderr and "--rescore-changed" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(cmd + ["--rescore-changed"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    after = pq.read_table(out / "catalog").to_pandas().set_index("id")["score"]
    assert len(after) == 48 and after.index.is_unique
    assert json.loads((out / "summary.json").read_text())["counts"]["rows_this_run"] == 24  # only b again
    a_ids = [i for i in after.index if i.startswith("a.npy")]
    np.testing.assert_array_equal(after[a_ids].to_numpy(), before[a_ids].to_numpy())
    fresh = serve(bundle_dir, [str(inp / "b.npy")], tmp_path / "fresh", ServeOptions(backend="ort"), **QUIET)
    assert fresh["counts"]["catalog_rows"] == 24
    ref = pq.read_table(tmp_path / "fresh" / "catalog").to_pandas().set_index("id")["score"]
    b_ids = sorted(ref.index)
    np.testing.assert_allclose(after[b_ids].to_numpy(), ref[b_ids].to_numpy(), atol=1e-6)
