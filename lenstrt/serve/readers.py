"""Reading for serve: the work units' batches, from one reader (in the serve process) or from N processes
(`--readers N`: units dealt round-robin to PyTorch DataLoader workers, batches handed back through
shared memory and pinned by the loader on a GPU).

One reader thread tops out near the speed of one core copying from the page cache (~25-37k img/s of
3x64x64 float32 here: h5py holds one global lock, so more threads would not help); a GPU serving a
resnet18 in TensorRT fp16 wants far more. Workers ignore SIGINT/SIGTERM: the serve process owns the
graceful stop and shuts them down when it has drained.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from lenstrt.errors import InputError


def _quiet_worker(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


class UnitBatches(IterableDataset):
    """(unit, Batch without pixels, images tensor, last-of-unit) for the units of this worker; a unit
    that cannot be read is (unit, InputError, None, True), as from the reader thread."""

    def __init__(self, units: list, batch_size: int, bundle_input: dict, keep: tuple[str, ...] | None,
                 in_process: bool = False):
        """`in_process`: iterated by serve itself, so batches keep their pixels (no shared-memory hop)."""
        self.units, self.bs, self.input, self.keep, self.in_process = units, batch_size, bundle_input, keep, in_process

    def __iter__(self) -> Iterator[tuple[Any, Any, Any, bool]]:
        from lenstrt.data.readers import CutoutFile

        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        handle = None
        try:
            for u in self.units[wid::n]:
                try:
                    if handle is None or str(handle.path) != u.path:
                        if handle is not None:
                            handle.close()
                        handle = CutoutFile.for_bundle(u.path, self.input, self.keep)
                    for s in range(u.start, u.stop, self.bs):
                        b = handle.read(s, min(u.stop, s + self.bs))
                        last = s + self.bs >= u.stop
                        if self.in_process:
                            yield u, b, b.images, last
                            continue
                        images = torch.from_numpy(b.images)  # travels through shared memory
                        meta = dataclasses.replace(b, images=np.empty((len(b), 0), np.float32))  # len() kept
                        yield u, meta, images, last
                except InputError as exc:
                    if handle is not None:
                        handle.close()
                        handle = None
                    yield u, exc, None, True
        finally:
            if handle is not None:
                handle.close()


def unit_batches(units: list, batch_size: int, bundle_input: dict, keep, readers: int, pin: bool):
    """(unit, Batch, images, last) for every batch of `units`: read here for one reader, else by a
    DataLoader with `readers` worker processes (prefetching two batches each). `pin`: images in pinned
    memory (a GPU run), so the host-to-device copy can be asynchronous."""
    if readers <= 1:
        for u, b, images, last in UnitBatches(units, batch_size, bundle_input, keep, in_process=True):
            yield u, b, (torch.from_numpy(images).pin_memory() if pin and images is not None else images), last
        return
    yield from torch.utils.data.DataLoader(UnitBatches(units, batch_size, bundle_input, keep), batch_size=None,
                                           num_workers=readers, pin_memory=pin, prefetch_factor=2,
                                           worker_init_fn=_quiet_worker)


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
