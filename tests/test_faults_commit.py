"""Exactly-once under deterministic faults: every step of a commit fails in turn, then the run resumes.

A unit is committed by writing its part file (temp name + rename) and then appending a ledger line.
Here each step fails on unit 5 of 8: an injected OSError in the part write, in the rename, in the
ledger append (before anything is written, half-way through the line, after the line but before the
fsync), and a SIGKILL of a real serve process before the rename, between the rename and the ledger
line, and just after the ledger line. Each time the state on disk is checked against what the failure
point implies, the same command is rerun, and the catalog must hold every input row exactly once with
scores equal to an uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lenstrt.errors import LenstrtError
from lenstrt.serve import pipeline
from lenstrt.serve.ledger import Ledger
from lenstrt.serve.pipeline import ServeOptions, serve
from lenstrt.serve.writers import part_name

OPTS = dict(backend="ort", unit_rows=40, batch_size=16)   # 2 files x 128 rows -> units 40, 40, 40, 8 per file
N_UNITS, TARGET = 8, 5                                     # the unit the faults hit (second file, second unit)
ROWS = [40, 40, 40, 8, 40, 40, 40, 8]


def _quiet(*a):
    pass


def _serve(bundle, data, out):
    return serve(bundle, [str(data)], out, ServeOptions(**OPTS), progress=False, log=_quiet)


def _catalog(out):
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("part-*.parquet"))])


def _ledger_units(out) -> list[int]:
    """Units of the complete ledger lines (a torn last line has no newline)."""
    lines = (out / "ledger.jsonl").read_text().split("\n")
    return [json.loads(line)["index"] for line in lines[:-1]]


@pytest.fixture(scope="module")
def reference(good_bundle_dir, good_test_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = _serve(good_bundle_dir, good_test_dir, out)
    assert summary["counts"]["units"] == N_UNITS and summary["counts"]["catalog_rows"] == 256
    return _catalog(out).sort_by("id")


def _check_resumed(out, reference, bundle, data, redo: list[int]):
    """Rerun the same command; every row once, the scores of an uninterrupted run, only `redo` redone."""
    summary = _serve(bundle, data, out)
    assert summary["counts"]["rows_this_run"] == sum(ROWS[i] for i in redo)
    assert summary["counts"]["catalog_rows"] == summary["counts"]["input_rows"] == 256
    assert sorted(_ledger_units(out)) == list(range(N_UNITS))  # each unit's line once, none twice
    assert sorted(p.name for p in (out / "catalog").iterdir()) == [part_name(i, "parquet") for i in range(N_UNITS)]
    t = _catalog(out)
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 256 and sorted(ids) == reference.column("id").to_pylist()
    t = t.sort_by("id")
    for col in reference.column_names:
        if col.startswith("score"):
            np.testing.assert_array_equal(t.column(col).to_numpy(), reference.column(col).to_numpy(), err_msg=col)


def _fail_part_write(monkeypatch):
    real = pipeline.write_part

    def write_part(path, cols, fmt):
        if path.name == part_name(TARGET, fmt):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, cols, fmt)

    monkeypatch.setattr(pipeline, "write_part", write_part)
    return "cannot write (No space left on device)"


def _fail_rename(monkeypatch):
    real = os.replace

    def replace(src, dst, *a, **kw):
        if os.path.basename(dst) == part_name(TARGET, "parquet"):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return "cannot write (Input/output error)"


def _ledger_fault(monkeypatch, written: str):
    """Ledger.record fails on the target unit after writing nothing, half the line, or the whole line
    (the fsync fails)."""
    real = Ledger.record

    def record(self, rec):
        if rec["index"] != TARGET:
            return real(self, rec)
        line = json.dumps(rec) + "\n"
        part = {"nothing": "", "half": line[: len(line) // 2], "line": line}[written]
        self._fh.write(part)
        self._fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Ledger, "record", record)
    return "ledger.jsonl: cannot append (No space left on device)"


FAULTS = {
    # fault -> (inject, parts on disk after the fault, units the rerun must redo)
    "part write": (_fail_part_write, [0, 1, 2, 3, 4], [5, 6, 7]),
    "rename": (_fail_rename, [0, 1, 2, 3, 4], [5, 6, 7]),
    "ledger append, nothing written": (lambda mp: _ledger_fault(mp, "nothing"), [0, 1, 2, 3, 4, 5], [5, 6, 7]),
    "ledger append, torn line": (lambda mp: _ledger_fault(mp, "half"), [0, 1, 2, 3, 4, 5], [5, 6, 7]),
    "ledger fsync, line written": (lambda mp: _ledger_fault(mp, "line"), [0, 1, 2, 3, 4, 5], [6, 7]),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_oserror_at_each_commit_step_then_resume(fault, reference, good_bundle_dir, good_test_dir, tmp_path,
                                                 monkeypatch):
    inject, parts_after, redo = FAULTS[fault]
    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        message = inject(mp)
        with pytest.raises(LenstrtError) as ei:
            _serve(good_bundle_dir, good_test_dir, out)
    assert message in str(ei.value) and "rerun the same command" in str(ei.value)
    # what is on disk is exactly what the failure point implies: no temp file left by a failed rename,
    # the units before the target committed, nothing after it
    assert sorted(p.name for p in (out / "catalog").iterdir()) == [part_name(i, "parquet") for i in parts_after]
    assert _ledger_units(out) == [0, 1, 2, 3, 4] + ([TARGET] if fault.startswith("ledger fsync") else [])
    tail = (out / "ledger.jsonl").read_text().split("\n")[-1]
    assert (tail != "") == fault.endswith("torn line")
    _check_resumed(out, reference, good_bundle_dir, good_test_dir, redo)


# The same points hit by SIGKILL in a real serve process (nothing in Python runs after it: no finally,
# no atexit, no close). The hooks are installed by this script, not by lenstrt.
KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from lenstrt.serve import pipeline
    from lenstrt.serve.ledger import Ledger
    from lenstrt.serve.writers import part_name

    bundle, data, out, where, target, opts = sys.argv[1:7]
    target, name = int(target), part_name(int(target), "parquet")
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if where == "before rename":
        real_replace = os.replace
        os.replace = lambda src, dst, *a, **k: die() if Path(dst).name == name else real_replace(src, dst, *a, **k)
    elif where == "after part":
        real_write = pipeline.write_part
        def write_part(path, cols, fmt):
            real_write(path, cols, fmt)
            if path.name == name:
                die()
        pipeline.write_part = write_part
    elif where == "after ledger line":
        real_record = Ledger.record
        def record(self, rec):
            real_record(self, rec)
            if rec["index"] == target:
                die()
        Ledger.record = record
    pipeline.serve(bundle, [data], out, pipeline.ServeOptions(**json.loads(opts)), progress=False,
                   log=lambda *a: None)
    print("finished without being killed")
""")

KILLS = {
    # where -> (parts on disk after the kill, ledger units after the kill, units the rerun must redo)
    "before rename": ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [5, 6, 7]),
    "after part": ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4], [5, 6, 7]),
    "after ledger line": ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [6, 7]),
}


@pytest.mark.parametrize("where", list(KILLS))
def test_sigkill_at_each_commit_step_then_resume(where, reference, good_bundle_dir, good_test_dir, tmp_path):
    parts_after, ledger_after, redo = KILLS[where]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(good_bundle_dir), str(good_test_dir), str(out), where,
                           str(TARGET), json.dumps(OPTS)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-2000:]
    names = sorted(p.name for p in (out / "catalog").iterdir())
    committed = [part_name(i, "parquet") for i in parts_after]
    leftover = [n for n in names if n not in committed]
    assert names == sorted(committed + leftover)
    if where == "before rename":  # the temp file of the unfinished part is still there; the rerun removes it
        assert len(leftover) == 1 and leftover[0].startswith(f".{part_name(TARGET, 'parquet')}.tmp")
    else:
        assert leftover == []
    assert _ledger_units(out) == ledger_after
    _check_resumed(out, reference, good_bundle_dir, good_test_dir, redo)

