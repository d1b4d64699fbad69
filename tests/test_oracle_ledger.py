"""The ledger, the unit plan and the resume checks of `serve`, against expectations written out by hand.

`make mutation` runs these for lenstrt/serve/ledger.py and `prepare` in lenstrt/serve/pipeline.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lenstrt.errors import InputError
from lenstrt.serve.ledger import Ledger, Unit, plan_units
from lenstrt.serve.pipeline import ServeOptions, prepare
from lenstrt.serve.writers import part_name


def test_plan_units_by_hand():
    units = plan_units([("a.h5", 5), ("b.npy", 2), ("c.h5", 0), ("d.h5", 4)], unit_rows=2)
    assert [(u.index, u.path, u.start, u.stop) for u in units] == [
        (0, "a.h5", 0, 2), (1, "a.h5", 2, 4), (2, "a.h5", 4, 5), (3, "b.npy", 0, 2), (4, "d.h5", 0, 2),
        (5, "d.h5", 2, 4)]
    assert [u.rows for u in units] == [2, 2, 1, 2, 2, 2]
    assert units[2].key == "a.h5:4:5"   # the ledger's key: a format on disk, kept stable
    assert plan_units([("x", 3)], unit_rows=10) == [Unit(0, "x", 0, 3)]


def test_ledger_round_trip_and_line_format(tmp_path):
    led = Ledger(tmp_path)
    assert led.path == tmp_path / "ledger.jsonl" and led.done == {}
    led.record({"unit": "a:0:2", "part": "p0", "rows": 2, "index": 0})
    # on disk (flushed) before record returns, one JSON object per line
    assert (tmp_path / "ledger.jsonl").read_text() == '{"unit": "a:0:2", "part": "p0", "rows": 2, "index": 0}\n'
    led.record({"unit": "a:2:4", "part": "p1", "rows": 2, "index": 1})
    assert list(led.done) == ["a:0:2", "a:2:4"] and led.done["a:2:4"]["part"] == "p1"
    led.close()
    again = Ledger(tmp_path)   # reopening appends, never truncates
    assert again.done == led.done
    again.record({"unit": "b:0:1", "part": "p2", "rows": 1, "index": 2})
    again.close()
    assert len((tmp_path / "ledger.jsonl").read_text().splitlines()) == 3


def test_ledger_skips_blank_lines_and_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"unit": "a", "part": "p0", "rows": 1}\n\n  \n{"unit": "b", "part": "p1", "rows": 1}\n{"unit": "c", "pa')
    led = Ledger(tmp_path)
    assert list(led.done) == ["a", "b"]
    led.close()
    # the file is rewritten without the torn line (and the blank ones), so new lines follow valid ones
    assert path.read_text() == '{"unit": "a", "part": "p0", "rows": 1}\n{"unit": "b", "part": "p1", "rows": 1}\n'
    path.write_text('{"unit": "a", "part": "p0", "rows": 1}\n{"unit": "b", "pa\n{"unit": "c", "part": "p", "rows": 1}\n')
    with pytest.raises(InputError, match=r"ledger.jsonl: corrupt line 2; pass --no-resume to start over"):
        Ledger(tmp_path)


def test_ledger_forget_rewrites_without_the_units(tmp_path):
    led = Ledger(tmp_path)
    for i, k in enumerate(("a:0:1", "a:1:2", "b:0:1")):
        led.record({"unit": k, "part": f"p{i}", "rows": 1, "index": i})
    led.forget({"a:1:2", "not-there"})
    assert list(led.done) == ["a:0:1", "b:0:1"]
    led.record({"unit": "a:1:2", "part": "p1", "rows": 1, "index": 1})   # still appendable, after the kept lines
    led.close()
    assert [json.loads(x)["unit"] for x in (tmp_path / "ledger.jsonl").read_text().splitlines()] == [
        "a:0:1", "b:0:1", "a:1:2"]
    assert list(Ledger(tmp_path).done) == ["a:0:1", "b:0:1", "a:1:2"]


# -- prepare: the resume checks ---------------------------------------------------------------------------

BASE = dict(backend="ort", unit_rows=50)


@pytest.fixture(scope="module")
def other_bundle(good_bundle_dir, tmp_path_factory):
    """The same bundle with one more key in its manifest: another manifest sha256."""
    d = tmp_path_factory.mktemp("other") / "b"
    shutil.copytree(good_bundle_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["note"] = "re-exported"
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def _prepare(bundle, data, out, **opts):
    run = prepare(bundle, [str(data)], out, ServeOptions(**{**BASE, **opts}))
    run.ledger.close()
    return run


CHANGES = {  # option -> a value other than the first run's
    "unit_rows": dict(unit_rows=64), "format": dict(fmt="csv"), "fused": dict(fused=True),
    "mc_samples": dict(mc_samples=4), "fusion": dict(fusion="uncertainty_weighted"), "prevalence": dict(prevalence=1e-3),
}


@pytest.mark.parametrize("key", ["bundle_manifest_sha256", *CHANGES])
def test_resume_refuses_each_changed_option(key, good_bundle_dir, other_bundle, good_test_dir, tmp_path):
    first = _prepare(good_bundle_dir, good_test_dir, tmp_path)
    run_json = (tmp_path / "run.json").read_text()
    bundle = other_bundle if key == "bundle_manifest_sha256" else good_bundle_dir
    with pytest.raises(InputError) as ei:
        _prepare(bundle, good_test_dir, tmp_path, **CHANGES.get(key, {}))
    assert str(ei.value) == (f"{tmp_path}: holds a run with different {key}; resume needs the same bundle and options, "
                             "or pass --no-resume to start over")
    assert (tmp_path / "run.json").read_text() == run_json   # the old run is left as it was
    # the same options resume; --no-resume with the new ones starts over
    assert len(_prepare(good_bundle_dir, good_test_dir, tmp_path).units) == len(first.units)
    _prepare(bundle, good_test_dir, tmp_path, resume=False, **CHANGES.get(key, {}))


def test_resume_names_every_changed_option(good_bundle_dir, good_test_dir, tmp_path):
    _prepare(good_bundle_dir, good_test_dir, tmp_path)
    with pytest.raises(InputError, match=r"different unit_rows, fusion, prevalence;"):
        _prepare(good_bundle_dir, good_test_dir, tmp_path, unit_rows=7, fusion="uncertainty_weighted", prevalence=0.5)


def test_prepare_records_the_run_and_plans_units(good_bundle_dir, good_test_dir, tmp_path):
    from lenstrt.bundle import Bundle

    run = _prepare(good_bundle_dir, good_test_dir, tmp_path, prevalence=0.01)
    b = Bundle(good_bundle_dir)
    files = [str(good_test_dir / "shard-00000.h5"), str(good_test_dir / "shard-00001.h5")]
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert {k: recorded[k] for k in ("bundle_manifest_sha256", "inputs", "unit_rows", "format", "fused", "mc_samples",
                                     "fusion", "prevalence")} == {
        "bundle_manifest_sha256": b.manifest_sha256(), "inputs": files, "unit_rows": 50, "format": "parquet",
        "fused": False, "mc_samples": 0, "fusion": "mean", "prevalence": 0.01}
    assert [(u.path, u.start, u.stop) for u in run.units] == [
        (f, a, z) for f in files for a, z in ((0, 50), (50, 100), (100, 128))]
    assert run.todo == run.units and run.n_files == 2 and run.open_errors == 0
    assert run.member_names == ["vit_tiny-s0", "vit_tiny-s1"] and run.bundle_tag == b.manifest_sha256()[:12]
    assert run.train_frac == pytest.approx(np.mean([m.entry["train_lens_fraction"] for m in b.members]), abs=0)
    assert run.catalog == tmp_path / "catalog" and run.catalog.is_dir()


def test_train_fraction_defaults_to_one_half(good_bundle_dir, good_test_dir, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(good_bundle_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    del m["members"][0]["train_lens_fraction"]
    (d / "manifest.json").write_text(json.dumps(m))
    run = _prepare(d, good_test_dir, tmp_path / "out")
    assert run.train_frac == pytest.approx((0.5 + m["members"][1]["train_lens_fraction"]) / 2, abs=0)


def test_resume_keeps_committed_parts_and_drops_the_rest(good_bundle_dir, good_test_dir, tmp_path):
    run = prepare(good_bundle_dir, [str(good_test_dir)], tmp_path, ServeOptions(**BASE))
    cols = {"id": ["x"], "score": np.array([0.5], np.float32)}
    run.commit(run.units[0], cols)
    run.commit(run.units[3], cols)
    run.ledger.close()
    (run.catalog / part_name(1, "parquet")).write_bytes(b"written, never committed")
    (run.catalog / ".part-000002.parquet.tmp123").write_bytes(b"a temp file of a killed writer")
    # a ledger line (and its part) for a unit that is not in this plan: never kept, never redone
    (run.catalog / "part-000099.parquet").write_bytes(b"old")
    with open(tmp_path / "ledger.jsonl", "a") as fh:
        fh.write(json.dumps({"unit": "elsewhere.h5:0:9", "part": "part-000099.parquet", "rows": 9, "index": 99}) + "\n")
    again = _prepare(good_bundle_dir, good_test_dir, tmp_path)
    assert sorted(p.name for p in again.catalog.iterdir()) == [part_name(0, "parquet"), part_name(3, "parquet")]
    assert [u.index for u in again.todo] == [1, 2, 4, 5]


def test_no_resume_starts_over_and_keeps_foreign_files(good_bundle_dir, good_test_dir, tmp_path):
    run = prepare(good_bundle_dir, [str(good_test_dir)], tmp_path, ServeOptions(**BASE))
    run.commit(run.units[0], {"id": ["x"], "score": np.array([0.5], np.float32)})
    run.ledger.close()
    for name in ("errors.jsonl", "summary.json", "candidates.csv", "notes.txt"):
        (tmp_path / name).write_text("x")
    again = _prepare(good_bundle_dir, good_test_dir, tmp_path, resume=False, unit_rows=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "ledger.jsonl", "notes.txt", "run.json"]
    assert list(again.catalog.iterdir()) == [] and (tmp_path / "ledger.jsonl").read_text() == ""
    assert len(again.todo) == len(again.units) == 4


def test_unreadable_input_is_recorded_and_counted(good_bundle_dir, good_test_dir, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(good_test_dir / "shard-00000.h5", tmp_path / "in" / "a.h5")
    (tmp_path / "in" / "b.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    run = _prepare(good_bundle_dir, tmp_path / "in", tmp_path / "out")
    assert run.n_files == 1 and run.open_errors == 1 and len(run.units) == 3
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["file"].endswith("b.h5") and errors[0]["stage"] == "open"


def test_a_unit_delivered_twice_is_committed_once(good_bundle_dir, good_test_dir, tmp_path):
    """Run.commit is idempotent per unit (the Ray driver may get a retried task's result twice)."""
    import pyarrow.parquet as pq

    run = prepare(good_bundle_dir, [str(good_test_dir)], tmp_path, ServeOptions(**BASE))
    u = run.units[2]
    cols = {"id": ["a", "b"], "score": np.array([0.1, 0.2], np.float32)}
    run.commit(u, cols)
    run.commit(u, {"id": ["c"], "score": np.array([0.9], np.float32)})
    run.ledger.close()
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"unit": u.key, "part": part_name(2, "parquet"), "rows": 28, "index": 2}]
    assert pq.read_table(tmp_path / "catalog" / part_name(2, "parquet")).column("id").to_pylist() == ["a", "b"]


def test_resume_with_changed_inputs_refuses_or_rescores_them(good_bundle_dir, good_test_dir, tmp_path):
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    names = ["shard-00000.h5", "shard-00001.h5"]
    for n in names:
        shutil.copy(good_test_dir / n, data / n)
    run = prepare(good_bundle_dir, [str(data)], out, ServeOptions(**BASE))
    assert run.bundle.root == good_bundle_dir and run.out == out
    for u in run.units:
        run.commit(u, {"id": [u.key], "score": np.array([0.5], np.float32)})
    run.ledger.close()
    _prepare(good_bundle_dir, data, out)   # unchanged inputs: resumes
    tail = f": changed since {out} scored it (size, time or content differ); pass --rescore-changed to score the " \
           "changed file(s) again, or --no-resume to start over"
    shutil.copy2(data / names[1], tmp_path / "kept.h5")      # shard 1 as it was, time stamp included
    shutil.copy(good_test_dir / names[1], data / names[0])   # shard 0 replaced by other cutouts
    with pytest.raises(InputError) as ei:
        _prepare(good_bundle_dir, data, out)
    assert str(ei.value) == f"{data / names[0]}{tail}"
    shutil.copy(good_test_dir / names[0], data / names[1])   # and shard 1 too
    with pytest.raises(InputError) as ei:
        _prepare(good_bundle_dir, data, out)
    assert str(ei.value) == f"{data / names[0]} (and 1 more){tail}"
    shutil.copy2(tmp_path / "kept.h5", data / names[1])      # shard 1 back as it was
    rescored = _prepare(good_bundle_dir, data, out, rescore_changed=True)
    changed = {u.path for u in rescored.todo}
    assert changed == {str(data / names[0])}   # only shard 0 is scored again
    assert sorted(p.name for p in rescored.catalog.iterdir()) == [part_name(u.index, "parquet") for u in rescored.units
                                                                  if u.path not in changed]
    assert set(json.loads(x)["unit"] for x in (out / "ledger.jsonl").read_text().splitlines()) == {
        u.key for u in rescored.units if u.path not in changed}


def test_unreadable_inputs_only_is_one_error_naming_the_log(good_bundle_dir, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError, match=rf"no readable cutout files among the inputs \(see {tmp_path / 'out'}/errors.jsonl\)"):
        _prepare(good_bundle_dir, tmp_path / "in", tmp_path / "out")


def test_keep_columns_resume_compares_lists_with_tuples(good_bundle_dir, good_test_dir, tmp_path):
    _prepare(good_bundle_dir, good_test_dir, tmp_path, keep_columns=())
    _prepare(good_bundle_dir, good_test_dir, tmp_path, keep_columns=())   # JSON gives back a list: same option
