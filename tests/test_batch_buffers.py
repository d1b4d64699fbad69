"""Serve's reading into reused batch buffers (issue #14): decoding straight into a caller's buffer gives
what an ordinary read gives for every storage and layout; a buffer is never reused before the consumer
releases it, with one reader or several processes; a reader process that fails or dies stops serve with
one line instead of hanging it."""

import numpy as np
import pytest

from lenstrt.data.readers import FLAG_NONFINITE, CutoutFile
from lenstrt.data.shards import STORAGE, write_shard
from lenstrt.errors import LenstrtError
from lenstrt.serve import readers
from lenstrt.serve.ledger import plan_units

INPUT = {"name": "images", "shape": [-1, 3, 64, 64], "bands": ["g", "r", "i"]}


def _shard(path, x, storage="float32", bands='["g", "r", "i"]'):
    write_shard(path, {"images": x}, {"bands": bands}, storage=storage)
    return path


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(7)
    return (300 + 30 * rng.normal(size=(70, 3, 64, 64))).astype(np.float32)


@pytest.mark.parametrize("storage", STORAGE)
def test_reading_into_a_buffer_equals_an_ordinary_read(tmp_path, pixels, storage):
    p = _shard(tmp_path / "a.h5", pixels, storage)
    buf = np.full((32, 3, 64, 64), -1.0, np.float32)
    with CutoutFile.for_bundle(p, INPUT) as f:
        for s in range(0, f.n, 32):
            want = f.read(s, min(f.n, s + 32))
            got = f.read(s, min(f.n, s + 32), out=buf)
            assert np.shares_memory(got.images, buf)
            np.testing.assert_array_equal(got.images, want.images)
            assert got.ids == want.ids and (got.flags == want.flags).all()


def test_buffer_reads_reorder_bands_resize_and_fill_nonfinite(tmp_path, pixels):
    """The layouts that cannot decode in place (bands stored in another order, another stamp size)
    still land in the buffer, and non-finite pixels are filled and flagged there, not in a copy."""
    x = pixels[:8].copy()
    x[3, 1, 5, 5] = np.nan
    x[6, 0, :, :] = np.inf
    reordered = _shard(tmp_path / "irg.h5", x[:, [2, 0, 1]].copy(), bands='["i", "g", "r"]')
    bigger = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=300.0)
    resized = _shard(tmp_path / "big.h5", bigger)
    for p in (reordered, resized):
        buf = np.zeros((8, 3, 64, 64), np.float32)
        with CutoutFile.for_bundle(p, INPUT) as f:
            want, got = f.read(0, 8), f.read(0, 8, out=buf)
        assert np.shares_memory(got.images, buf) and np.isfinite(buf).all()
        np.testing.assert_array_equal(got.images, want.images)
        assert got.flags[3] & FLAG_NONFINITE and got.flags[6] & FLAG_NONFINITE
        assert not (got.flags[[0, 1, 2, 4, 5, 7]] & FLAG_NONFINITE).any()
        assert buf[3, 1, 5, 5] == np.median(np.delete(x[3, 1].ravel(), 5 * 64 + 5))


def _units(files, rows):
    infos = []
    for p in files:
        with CutoutFile(p) as f:
            infos.append((str(p), f.n))
    return plan_units(infos, rows)


@pytest.mark.parametrize("n_readers", [1, 2])
def test_a_buffer_is_not_reused_before_it_is_released(tmp_path, pixels, n_readers):
    """The consumer holds `hold` batches unreleased (as serve does with its queue and batches in
    flight): their pixels must still be theirs when it finally looks, and every row arrives once."""
    files = [_shard(tmp_path / f"s{k}.h5", pixels + 1000 * k) for k in range(3)]
    want = {(str(p), i): pixels[i] + 1000 * k for k, p in enumerate(files) for i in range(len(pixels))}
    hold, held, seen = 3, [], []
    for _u, b, images, _last, release in readers.unit_batches(_units(files, 24), 8, INPUT, None, n_readers,
                                                            pin=False, hold=hold):
        held.append((b, np.asarray(images), release))
        if len(held) > hold:
            b0, im0, rel0 = held.pop(0)
            for r, i in enumerate(b0.index):
                np.testing.assert_array_equal(im0[r], want[b0.source, int(i)])
            seen += [(b0.source, int(i)) for i in b0.index]
            rel0()
    for b0, im0, _rel0 in held:
        for r, i in enumerate(b0.index):
            np.testing.assert_array_equal(im0[r], want[b0.source, int(i)])
        seen += [(b0.source, int(i)) for i in b0.index]
    assert sorted(seen) == sorted(want)


def test_an_unreadable_unit_is_reported_not_fatal(tmp_path, pixels):
    good = _shard(tmp_path / "good.h5", pixels[:16])
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    units = plan_units([(str(good), 16), (str(bad), 16)], 16)
    got = {u.path: b for u, b, _, _, _ in readers.unit_batches(units, 8, INPUT, None, 2, pin=False)}
    assert len(got[str(good)]) == 8 and str(bad) in str(got[str(bad)])


def test_a_failing_reader_process_stops_serve_with_one_line(tmp_path, pixels, monkeypatch):
    units = _units([_shard(tmp_path / "a.h5", pixels[:16])], 8)

    def broken(*a, **k):
        raise RuntimeError("disk on fire")
        yield

    monkeypatch.setattr(readers, "_read_units", broken)  # inherited by the forked readers
    with pytest.raises(LenstrtError, match="reader process 0 failed: RuntimeError: disk on fire"):
        list(readers.unit_batches(units, 8, INPUT, None, 2, pin=False))


def test_a_reader_process_that_dies_stops_serve_instead_of_hanging(tmp_path, pixels, monkeypatch):
    import os

    units = _units([_shard(tmp_path / "a.h5", pixels[:16])], 8)

    def killed(*a, **k):
        os._exit(3)  # as the OOM killer would: no message, no "done"
        yield

    monkeypatch.setattr(readers, "_read_units", killed)
    with pytest.raises(LenstrtError, match=r"reader process \d died \(exit code 3\)"):
        list(readers.unit_batches(units, 8, INPUT, None, 2, pin=False))


def test_the_reader_thread_gives_a_buffer_back_only_on_release(tmp_path, pixels, monkeypatch):
    given = []

    class Watched(readers.Buffers):
        def give(self, i):
            given.append(i)
            super().give(i)

    monkeypatch.setattr(readers, "Buffers", Watched)
    units = _units([_shard(tmp_path / "a.h5", pixels[:32])], 32)
    it = readers.unit_batches(units, 8, INPUT, None, 1, pin=False, hold=3)
    items = [next(it) for _ in range(4)]  # the fourth read needed the last free buffer
    assert given == []
    items[1][4]()
    assert given == [1]  # the second batch read went into buffer 1
    assert len(list(it)) == 0


def test_big_endian_files_read_into_a_buffer(tmp_path, pixels):
    """HDF5 written from FITS arrays is often big-endian: decoded (bytes swapped) like any other."""
    import h5py

    for dt in (">f4", ">f2", "<f8"):
        p = tmp_path / f"be{dt[1:]}.h5"
        with h5py.File(p, "w") as f:
            f.create_dataset("images", data=pixels[:6].astype(dt))
            f.attrs["bands"] = '["g", "r", "i"]'
        buf = np.zeros((6, 3, 64, 64), np.float32)
        with CutoutFile.for_bundle(p, INPUT) as f:
            got = f.read(0, 6, out=buf)
        np.testing.assert_allclose(got.images, pixels[:6].astype(dt).astype(np.float32))
        assert np.shares_memory(got.images, buf)


READER_ORPHAN = '''
import sys, time
from pathlib import Path
from lenstrt.serve import readers
from lenstrt.serve.ledger import plan_units

INPUT = {"name": "images", "shape": [-1, 3, 64, 64], "bands": ["g", "r", "i"]}
units = plan_units([(sys.argv[1], 70)], 8)
it = readers.unit_batches(units, 8, INPUT, None, 2, pin=False, hold=1)
held = next(it)  # never released: the readers block on their buffers
time.sleep(60)
'''


def test_reader_processes_die_with_serve(tmp_path, pixels):
    """serve killed outright (SIGKILL, the OOM killer): its readers must not live on (holding the output
    lock's file, inherited through fork) blocked on their pipes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    p = _shard(tmp_path / "a.h5", pixels)
    script = tmp_path / "orphan.py"
    script.write_text(READER_ORPHAN)
    proc = subprocess.Popen([sys.executable, str(script), str(p)])

    def children() -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    deadline = time.time() + 60
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    kids = children()
    assert len(kids) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = kids
    while alive and time.time() < deadline:
        alive = [k for k in kids if os.path.exists(f"/proc/{k}") and
                 open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        time.sleep(0.1)
    assert alive == [], f"reader processes {alive} outlived serve"
