import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lenstrt.bundle import Bundle
from lenstrt.errors import BackendError, ConfigError, InputError
from lenstrt.runtime.select import Capabilities, choose_backend
from lenstrt.serve.pipeline import ServeOptions, serve


def _catalog(out):
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("*.parquet"))])


def _ids(sim_dir):
    ids = []
    for p in sorted(sim_dir.glob("*.h5")):
        with h5py.File(p) as f:
            ids += [i.decode() for i in f["ids"][:]]
    return ids


@pytest.fixture(scope="module")
def served(bundle_dir, sim_dir, tmp_path_factory):
    """The same catalog scored by ort (separate), ort (fused) and torch."""
    outs = {}
    for name, opts in {"ort": ServeOptions(backend="ort", unit_rows=40, batch_size=16),
                       "fused": ServeOptions(backend="ort", fused=True, unit_rows=40, batch_size=16),
                       "torch": ServeOptions(backend="torch", unit_rows=40, batch_size=16)}.items():
        out = tmp_path_factory.mktemp(f"serve_{name}")
        summary = serve(bundle_dir, [str(sim_dir)], out, opts, progress=False, log=lambda *a: None)
        outs[name] = (out, summary)
    return outs


def test_every_row_once_with_columns(served, sim_dir):
    out, summary = served["ort"]
    t = _catalog(out)
    assert sorted(t.column("id").to_pylist()) == sorted(_ids(sim_dir))
    assert t.column_names == ["id", "source", "index", "score", "score_std", "score_resnet18-s0",
                              "score_vit_tiny-s1000", "flags", "bundle"]
    assert summary["counts"] == {"input_rows": 96, "catalog_rows": 96, "units": 4, "units_done": 4,
                                 "rows_this_run": 96, "nonfinite_flagged_this_run": 0, "errors_recorded": 0}
    assert summary["backend"] == "ort" and "CPUExecutionProvider" in summary["ensemble"]["runners"][0]["providers"]
    cands = (out / "candidates.csv").read_text().splitlines()
    assert len(cands) == 1 + 96 and cands[0].startswith("id,source,index,score")
    scores = [float(line.split(",")[3]) for line in cands[1:]]
    assert scores == sorted(scores, reverse=True)


def test_backends_and_fused_agree(served):
    tabs = {k: _catalog(v[0]).sort_by("id") for k, v in served.items()}
    ref = tabs["torch"].column("score").to_numpy()
    for k in ("ort", "fused"):
        np.testing.assert_allclose(tabs[k].column("score").to_numpy(), ref, atol=1e-4)
        np.testing.assert_allclose(tabs[k].column("score_std").to_numpy(), tabs["torch"].column("score_std").to_numpy(),
                                   atol=1e-4)
    assert served["fused"][1]["ensemble"]["fused"] is True


@pytest.mark.slow
def test_kill_9_then_resume_is_exactly_once(bundle_dir, sim_dir, tmp_path):
    """A kill at a random moment (slow, and where it lands is luck: 4 in 18 runs it hit the gap between a
    part and its ledger line). tests/test_faults_commit.py kills at each step of a commit, every run."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lenstrt.cli.main", "serve", "--bundle", str(bundle_dir), "--input", str(sim_dir),
           "--out", str(out), "--backend", "torch", "--unit-rows", "2", "--batch-size", "2", "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "catalog").is_dir() and len(list((out / "catalog").glob("part-*"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sum(1 for _ in open(out / "ledger.jsonl"))
    assert 0 < done_before < 48
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    t = _catalog(out)
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 96 and sorted(ids) == sorted(_ids(sim_dir))
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["rows_this_run"] <= 96 - 2 * done_before + 2


def test_shape_mismatch_is_one_error_before_work(bundle_dir, tmp_path):
    np.save(tmp_path / "two_bands.npy", np.zeros((4, 2, 64, 64), np.float32))
    with pytest.raises(InputError) as ei:
        serve(bundle_dir, [str(tmp_path / "two_bands.npy")], tmp_path / "out", progress=False, log=lambda *a: None)
    msg = str(ei.value)
    assert "two_bands.npy" in msg and "2 bands" in msg and "expects 3 bands (g, r, i)" in msg
    assert not list((tmp_path / "out" / "catalog").glob("*"))


def test_corrupt_shard_recorded_and_skipped_nan_flagged(bundle_dir, tmp_path, rng):
    good = rng.normal(size=(10, 3, 64, 64)).astype(np.float32)
    good[3, 1, 5, 5] = np.nan
    np.save(tmp_path / "a_good.npy", good)
    (tmp_path / "b_bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # truncated HDF5
    out = tmp_path / "out"
    s = serve(bundle_dir, [str(tmp_path)], out, ServeOptions(backend="ort"), progress=False, log=lambda *a: None)
    assert s["counts"]["catalog_rows"] == 10 and s["counts"]["errors_recorded"] == 1
    err = json.loads((out / "errors.jsonl").read_text().splitlines()[0])
    assert err["file"].endswith("b_bad.h5") and "corrupt" in err["error"]
    t = _catalog(out)
    flags = dict(zip(t.column("index").to_pylist(), t.column("flags").to_pylist()))
    assert flags[3] == 1 and sum(flags.values()) == 1
    assert np.isfinite(t.column("score").to_numpy()).all()
    # --strict stops at the bad shard; what was written stays
    out2 = tmp_path / "out2"
    with pytest.raises(InputError, match="b_bad.h5"):
        serve(bundle_dir, [str(tmp_path / "a_good.npy"), str(tmp_path / "b_bad.h5")], out2,
              ServeOptions(backend="ort", strict=True), progress=False, log=lambda *a: None)


def test_prevalence_column(bundle_dir, sim_dir, tmp_path):
    serve(bundle_dir, [str(sim_dir / "shard-00000.h5")], tmp_path, ServeOptions(backend="ort", prevalence=1e-3),
          progress=False, log=lambda *a: None)
    t = _catalog(tmp_path)
    score, survey = t.column("score").to_numpy().astype(np.float64), t.column("score_survey").to_numpy()
    # Bayes: the log-odds shift by logit(survey prevalence) - logit(training lens fraction of the members)
    frac = np.mean([m.entry["train_lens_fraction"] for m in Bundle(bundle_dir).members])
    lo = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(survey, 1 / (1 + np.exp(-(lo(score) - lo(frac) + lo(1e-3)))), rtol=2e-5)
    assert np.all(survey <= score + 1e-7) and np.all(np.diff(survey[np.argsort(score)]) >= -1e-7)  # monotone


def test_resume_refuses_changed_options(bundle_dir, sim_dir, tmp_path):
    serve(bundle_dir, [str(sim_dir / "shard-00000.h5")], tmp_path, ServeOptions(backend="ort"), progress=False,
          log=lambda *a: None)
    with pytest.raises(InputError, match="different unit_rows"):
        serve(bundle_dir, [str(sim_dir / "shard-00000.h5")], tmp_path, ServeOptions(backend="ort", unit_rows=7),
              progress=False, log=lambda *a: None)


def test_tta_cascade_rescores_only_above_the_gate(bundle_dir, sim_dir, tmp_path):
    shard = [str(sim_dir / "shard-00000.h5")]
    quiet = {"progress": False, "log": lambda *a: None}
    serve(bundle_dir, shard, tmp_path / "plain", ServeOptions(backend="ort"), **quiet)
    plain = _catalog(tmp_path / "plain").to_pydict()
    gate = float(np.median(plain["score"]))
    lines: list[str] = []
    s = serve(bundle_dir, shard, tmp_path / "tta", ServeOptions(backend="ort", tta_above=gate), progress=False,
              log=lines.append)
    t = _catalog(tmp_path / "tta").to_pydict()
    assert t["id"] == plain["id"]
    first = np.array(plain["score"])
    hit = first >= gate
    np.testing.assert_array_equal(t["tta_views"], np.where(hit, 8, 1))
    assert 0 < hit.sum() < len(hit) and s["ensemble"]["tta"]["rescored"] == hit.sum()
    np.testing.assert_array_equal(np.array(t["score"])[~hit], first[~hit])  # below the gate: the one-view score
    assert not np.allclose(np.array(t["score"])[hit], first[hit], atol=1e-4)  # above it: the 8-view mean
    assert any(f">= {gate:g}" in line for line in lines)
    with pytest.raises(InputError, match="different tta, tta_above"):  # a resume must not mix the two
        serve(bundle_dir, shard, tmp_path / "tta", ServeOptions(backend="ort"), **quiet)


def test_mc_dropout_uncertainty_weighting(bundle_dir, sim_dir, tmp_path):
    s = serve(bundle_dir, [str(sim_dir / "shard-00000.h5")], tmp_path,
              ServeOptions(backend="torch", mc_samples=4, fusion="uncertainty_weighted"), progress=False,
              log=lambda *a: None)
    t = _catalog(tmp_path)
    assert s["ensemble"]["mc_samples"] == 4 and t.num_rows == 48
    p = np.stack([t.column("score_resnet18-s0").to_numpy(), t.column("score_vit_tiny-s1000").to_numpy()], 1)
    score = t.column("score").to_numpy()
    assert np.all(score >= p.min(1) - 1e-6) and np.all(score <= p.max(1) + 1e-6)  # a weighted mean
    with pytest.raises(ConfigError, match="--mc-samples"):
        serve(bundle_dir, [str(sim_dir)], tmp_path / "x", ServeOptions(backend="torch", fusion="uncertainty_weighted"),
              progress=False, log=lambda *a: None)


def _fake_bundle(bundle_dir, tmp_path, plan: dict | None):
    m = json.loads((bundle_dir / "manifest.json").read_text())
    if plan:
        for mem in m["members"]:
            mem["artifacts"]["plan"] = {"path": f"{mem['name']}.plan", **plan}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    return Bundle(tmp_path)


CPU = Capabilities(False, None, None, ("CPUExecutionProvider",), None)
H100 = Capabilities(True, "NVIDIA H100", "9.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), "10.13.0.35")
PLAN = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}


def test_auto_backend_choice(bundle_dir, tmp_path):
    (tmp_path / "a").mkdir()
    plain = _fake_bundle(bundle_dir, tmp_path / "a", None)
    assert choose_backend("auto", CPU, plain)[:2] == ("ort", "cpu")
    assert choose_backend("auto", H100, plain)[:2] == ("ort", "cuda")
    assert choose_backend("torch", H100, plain)[:2] == ("torch", "cuda")
    (tmp_path / "b").mkdir()
    with_plan = _fake_bundle(bundle_dir, tmp_path / "b", PLAN)
    assert choose_backend("auto", H100, with_plan)[:2] == ("trt", "cuda")
    l4 = Capabilities(True, "NVIDIA L4", "8.9", H100.ort_providers, "10.13.0.35")
    backend, device, why = choose_backend("auto", l4, with_plan)
    assert (backend, device) == ("ort", "cuda") and "built on NVIDIA H100" in why
    with pytest.raises(BackendError, match="this machine has NVIDIA L4"):
        choose_backend("trt", l4, with_plan)
    with pytest.raises(BackendError, match="ort-cuda needs onnxruntime-gpu"):
        choose_backend("ort-cuda", CPU, plain)
    with pytest.raises(ConfigError):
        choose_backend("tensorflow", CPU, plain)


def test_ledger_drops_a_torn_last_line(tmp_path):
    from lenstrt.serve.ledger import Ledger

    (tmp_path / "ledger.jsonl").write_text('{"unit": "a:0:4", "part": "p0", "rows": 4}\n{"unit": "a:4:8", "pa')
    led = Ledger(tmp_path)
    assert list(led.done) == ["a:0:4"]
    led.record({"unit": "a:4:8", "part": "p1", "rows": 4})
    led.close()
    assert list(Ledger(tmp_path).done) == ["a:0:4", "a:4:8"]  # the torn line did not poison the file
    (tmp_path / "ledger.jsonl").write_text('{"unit": "a:0:4"\n{"unit": "b", "part": "p", "rows": 1}\n')
    with pytest.raises(InputError, match="corrupt line 1"):
        Ledger(tmp_path)


def test_strict_stop_does_not_hang_on_a_busy_reader(bundle_dir, tmp_path, rng, monkeypatch):
    """A --strict stop while the reader is blocked on a full queue must end the run, not deadlock it."""
    import threading

    from lenstrt.serve import pipeline

    (tmp_path / "a_bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    np.save(tmp_path / "b_good.npy", rng.normal(size=(40, 3, 64, 64)).astype(np.float32))
    real_scan = pipeline._scan_inputs
    # let the bad file through the up-front scan so that it fails in the reader, first in the queue
    monkeypatch.setattr(pipeline, "_scan_inputs", lambda inputs, bundle, out, strict: (
        [(str(tmp_path / "a_bad.h5"), 1)] + real_scan([str(tmp_path / "b_good.npy")], bundle, out, False)[0], []))
    result = {}

    def run():
        try:
            serve(bundle_dir, [str(tmp_path)], tmp_path / "out",
                  ServeOptions(backend="ort", strict=True, batch_size=1, queue_depth=1), progress=False,
                  log=lambda *a: None)
        except InputError as exc:
            result["error"] = str(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "serve hung after a --strict stop"
    assert "a_bad.h5" in result["error"] and "--strict" in result["error"]


def test_busy_time_counts_overlapping_batches_once():
    from lenstrt.serve.pipeline import BusyTime

    b = BusyTime()
    assert b.add(0.0, 2.0) == 2.0
    assert b.add(1.0, 3.0) == 3.0    # submitted while the first ran: 1 s of it is new, not 2
    assert b.add(5.0, 6.0) == 4.0    # an idle gap (3-5) is not busy time
    assert b.add(5.5, 5.8) == 4.0    # wholly inside the last interval
    assert b.add(5.9, 6.5) == 4.5    # still counted from 6.0, the latest end, not 5.8
