"""Reading for serve: the work units' batches, decoded straight into a fixed set of batch buffers, by the
serve process's reader thread (`--readers 1`) or by N forked reader processes (`--readers N`).

Why not a DataLoader: it allocates a fresh shared-memory block per batch, so every batch paid page
faults in the worker and in serve plus a pickle (0.44-0.67x of one reader here). Here each reader owns
a few buffers in one anonymous shared mapping made before the fork (no /dev/shm size limit, nothing to
unlink after a crash); HDF5 decodes into them (`CutoutFile.read(out=...)`), only ids and flags travel
through a pipe, and serve hands a buffer back once that batch's result is in (`release`). On a GPU run
batches land in pinned buffers, so the host-to-device copy is asynchronous.

h5py serialises every call on one global lock and FITS parsing holds the GIL, so only processes add
read throughput. Reader processes ignore SIGINT/SIGTERM: serve owns the graceful stop.
"""

from __future__ import annotations

import dataclasses
import functools
import mmap
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lenstrt.errors import ConfigError, InputError, LenstrtError

# (unit, Batch with images | InputError, images (numpy, or a pinned tensor on GPU runs) | None, last, release)
Item = tuple[Any, Any, Any, bool, Callable[[], None]]


def _nothing() -> None:
    return None


class Buffers:
    """`n` batch buffers [rows, C, H, W] float32 and the free list: a reader takes one, serve gives it
    back when that batch is done. `pin`: page-locked (torch) memory for asynchronous uploads."""

    def __init__(self, n: int, rows: int, shape: tuple[int, ...], pin: bool = False):
        self.tensors: list[Any] = []
        if pin:
            import torch

            self.tensors = [torch.empty((rows, *shape), dtype=torch.float32, pin_memory=True) for _ in range(n)]
            self.arrays = [t.numpy() for t in self.tensors]
        else:
            self.arrays = [np.empty((rows, *shape), np.float32) for _ in range(n)]
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(n):
            self._free.put(i)

    def take(self, stop: threading.Event | None = None) -> int | None:
        """A free buffer's index; None once `stop` is set (the consumer is gone, nothing will come back)."""
        while True:
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                if stop is not None and stop.is_set():
                    return None

    def give(self, i: int) -> None:
        self._free.put(i)

    def view(self, i: int, n: int) -> Any:
        """What the Runner gets: the first n rows (a pinned tensor slice on GPU runs)."""
        return self.tensors[i][:n] if self.tensors else self.arrays[i][:n]


def _read_units(units: list, batch_size: int, bundle_input: dict, keep, take: Callable[[], int | None],
                give: Callable[[int], None], arrays) -> Iterator[tuple[Any, Any, int | None, bool]]:
    """(unit, Batch | InputError, buffer index | None, last) for every batch of `units`, each decoded
    into the buffer `take()` hands out. A unit that cannot be read is (unit, InputError, None, True)."""
    from lenstrt.data.readers import CutoutFile

    handle = None
    try:
        for u in units:
            try:
                if handle is None or str(handle.path) != u.path:
                    if handle is not None:
                        handle.close()
                    handle = CutoutFile.for_bundle(u.path, bundle_input, keep)
                for s in range(u.start, u.stop, batch_size):
                    i = take()
                    if i is None:
                        return
                    try:
                        b = handle.read(s, min(u.stop, s + batch_size), out=arrays[i])
                    except BaseException:
                        give(i)
                        raise
                    yield u, b, i, s + batch_size >= u.stop
            except InputError as exc:
                if handle is not None:
                    handle.close()
                    handle = None
                yield u, exc, None, True
    finally:
        if handle is not None:
            handle.close()


def _in_process(units, batch_size, bundle_input, keep, pin, hold, stop) -> Iterator[Item]:
    bufs = Buffers(hold + 1, batch_size, tuple(bundle_input["shape"][1:]), pin)
    for u, b, i, last in _read_units(units, batch_size, bundle_input, keep, lambda: bufs.take(stop), bufs.give,
                                     bufs.arrays):
        if i is None:
            yield u, b, None, last, _nothing
        else:
            yield u, b, bufs.view(i, len(b)), last, functools.partial(bufs.give, i)


def _pulled(units: list, tasks) -> Iterator[Any]:
    while (i := tasks.get()) is not None:
        yield units[i]


def _die_with(parent: int) -> None:
    """A reader blocks on pipes it also holds open, so it would never see serve die (SIGKILL, the OOM
    killer) and would live on, holding the output lock's file inherited through fork: ask Linux to kill
    it with its parent, and check the parent did not go before that was asked."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the getppid check below still covers a dead parent
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker(wid: int, parent: int, units: list, tasks, batch_size: int, bundle_input: dict, keep, arrays, free,
            results) -> None:
    """One reader process: the units it pulls from `tasks` (so readers finish together whatever the
    units' sizes), decoded into its own buffers; (kind, wid, ...) messages to serve."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # One thread for any torch work here (float16 widening): a pool forked from serve's is unusable, and a
    # fresh one per reader would fight the model for the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        for u, b, i, last in _read_units(_pulled(units, tasks), batch_size, bundle_input, keep, free.get, free.put,
                                         arrays):
            if i is None:
                results.put(("error", wid, u.index, b))
            else:
                results.put(("batch", wid, u.index, dataclasses.replace(b, images=None), len(b), i, last))
        results.put(("done", wid))
    except BaseException as exc:  # a bug, not bad input: serve stops with it
        results.put(("failed", wid, f"{type(exc).__name__}: {exc}"))


def _processes(units, batch_size, bundle_input, keep, readers, pin, hold, stop) -> Iterator[Item]:
    shape = tuple(int(x) for x in bundle_input["shape"][1:])
    per = 2 + -(-hold // readers)  # each reader can run ahead while serve holds `hold` batches
    row = int(np.prod(shape)) * 4
    block = mmap.mmap(-1, readers * per * batch_size * row)  # MAP_SHARED | MAP_ANONYMOUS, inherited by fork
    flat = np.frombuffer(block, np.float32).reshape(readers, per, batch_size, *shape)
    if "fork" not in mp.get_all_start_methods():
        raise ConfigError("--readers N needs fork (Linux); use --readers 1 here")
    ctx = mp.get_context("fork")  # the buffers are inherited, not named: fork is what shares them
    results = ctx.Queue()
    tasks = ctx.Queue()  # its feeder thread buffers: putting every unit never blocks on the pipe
    for k in range(len(units)):
        tasks.put(k)
    for _ in range(readers):
        tasks.put(None)
    frees = [ctx.SimpleQueue() for _ in range(readers)]
    by_index = {u.index: u for u in units}
    procs = []
    for w in range(readers):
        for i in range(per):
            frees[w].put(i)
        procs.append(ctx.Process(target=_worker, name=f"lenstrt-reader-{w}", daemon=True,
                                 args=(w, os.getpid(), units, tasks, batch_size, bundle_input, keep, flat[w], frees[w],
                                       results)))
    pinned = Buffers(hold + 1, batch_size, shape, pin=True) if pin else None
    try:
        for p in procs:
            p.start()
        running = set(range(readers))
        while running:
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is None:
                if stop is not None and stop.is_set():
                    return
                dead = [w for w in running if not procs[w].is_alive() and procs[w].exitcode]
                if dead:
                    raise LenstrtError(f"reader process {dead[0]} died (exit code {procs[dead[0]].exitcode}); "
                                       "rerun with --readers 1 to see the error, or rerun to resume")
                continue
            kind, w = msg[0], msg[1]
            if kind == "done":
                running.discard(w)
            elif kind == "failed":
                raise LenstrtError(f"reader process {w} failed: {msg[2]}")
            elif kind == "error":
                yield by_index[msg[2]], msg[3], None, True, _nothing
            else:
                _, w, ui, meta, n, i, last = msg
                src = flat[w, i, :n]
                if pinned is None:
                    images: Any = src
                    release = functools.partial(frees[w].put, i)
                else:  # one copy into pinned memory; the shared buffer goes straight back
                    j = pinned.take(stop)
                    if j is None:
                        return
                    pinned.arrays[j][:n] = src
                    frees[w].put(i)
                    images, src = pinned.view(j, n), pinned.arrays[j][:n]
                    release = functools.partial(pinned.give, j)
                yield by_index[ui], dataclasses.replace(meta, images=src), images, last, release
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=5)
        for q in (results, tasks):
            q.close()
            q.cancel_join_thread()


def unit_batches(units: list, batch_size: int, bundle_input: dict, keep, readers: int, pin: bool,
                 hold: int = 6, stop: threading.Event | None = None) -> Iterator[Item]:
    """(unit, Batch, images, last, release) for every batch of `units`, decoded into reused buffers.

    The consumer calls `release()` once it is done with a batch's images (its result is in): until then
    the buffer is not reused. It may hold up to `hold` batches unreleased without stalling the readers.
    `pin`: images are pinned tensors (a GPU run). `stop`: set when the consumer is gone."""
    if readers <= 1:
        yield from _in_process(units, batch_size, bundle_input, keep, pin, hold, stop)
    else:
        yield from _processes(units, batch_size, bundle_input, keep, readers, pin, hold, stop)


class Drain:
    """Which units may still pass once a graceful stop is asked for: those already started (some of
    their batches delivered), so that they complete and commit; new ones are dropped."""

    def __init__(self) -> None:
        self.open: set[str] = set()

    def admit(self, key: str, last: bool, draining: bool) -> bool | None:
        """True: deliver the item. False: drop it. None: draining and nothing is open: stop reading."""
        if draining and key not in self.open:
            return None if not self.open else False
        if last:
            self.open.discard(key)
        else:
            self.open.add(key)
        return True
