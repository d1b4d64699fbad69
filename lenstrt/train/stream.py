"""Streaming training data: shard files read in slices, never whole, so memory stays flat in the data size.

The plan of an epoch is a function of (seed, epoch, rank, worker) only, computed on row *indices*:
- the rows are cut into units of `chunk` consecutive rows of one file (one slice read each);
- a permutation seeded by (seed, epoch) deals the units round-robin to the ranks (disjoint), each
  rank shuffles its share with (seed, epoch, rank), and its DataLoader workers take every k-th unit;
- a shuffle buffer of `buffer` rows (seeded by (seed, epoch, rank, worker)) mixes rows across units;
- every worker of every rank yields the same number of batches per epoch (DDP needs equal steps).
Because the order is known from indices alone, pixels are read lazily: a unit is read when its first
row is due, and only its rows still to come are kept, which is at most what a real shuffle buffer
would hold. Resuming at step s therefore replays nothing but integers: each worker skips straight to
its batch and reads only the units whose rows are still pending (the exact-resume test checks it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from lenstrt.errors import InputError

# Loading a set into RAM briefly holds ~3 float32 copies (per-file reads, concatenation, the
# train/val split): in memory only when that fits in half the available memory.
_COPIES, _MEM_SHARE = 3, 0.5
OPEN_FILES = 32  # shards a loader worker keeps open (least recently used closed first)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable), or None where unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_streaming(paths: list[str], forced: bool | None, processes: int = 1) -> tuple[bool, str]:
    """(stream?, why). `forced` (the `data.stream` key / --stream, --in-memory) wins; otherwise the
    float32 size of the set against the memory available (shared by `processes` local ranks)."""
    from lenstrt.data.readers import inspect

    info = inspect(paths)
    nbytes = sum(f.n * f.bands * f.height * f.width * 4 for f in info.files)
    gb = nbytes / 1e9
    if forced is True:
        return True, f"streamed from shards (--stream; {gb:.1f} GB as float32)"
    if forced is False:
        return False, f"in memory (--in-memory; {gb:.1f} GB as float32)"
    avail = available_memory()
    if avail is None:
        return False, f"in memory ({gb:.1f} GB; available memory unknown)"
    budget = avail * _MEM_SHARE / max(1, processes)
    if nbytes * _COPIES <= budget:
        return False, (f"in memory: {gb:.2f} GB as float32 fits the {avail / 1e9:.1f} GB available"
                       + (f" / {processes} ranks" if processes > 1 else ""))
    return True, (f"streamed from shards: {gb:.1f} GB as float32 would not fit {_COPIES}x in half of the "
                  f"{avail / 1e9:.1f} GB available" + (f" / {processes} ranks" if processes > 1 else ""))


def _labels_of(path: Path, n: int) -> np.ndarray:
    """A file's labels without its pixels: h5py for HDF5 shards, slices of the reader otherwise."""
    from lenstrt.data.readers import CutoutFile

    if path.suffix in (".h5", ".hdf5", ".hdf"):
        import h5py

        with h5py.File(path, "r") as f:
            if "labels" in f:
                return np.asarray(f["labels"][:], np.float32)
    parts = []
    with CutoutFile(path) as cf:
        for a in range(0, n, 1024):
            b = cf.read(a, min(n, a + 1024))
            if b.labels is None:
                break
            parts.append(np.asarray(b.labels, np.float32))
    if not parts:
        raise InputError(f"{path}: no 'labels' (1 = lens, 0 = not); training and evaluation need labelled data")
    return np.concatenate(parts)


@dataclass
class ShardIndex:
    """The rows of a set of files, which of them are held out for validation, and the read units."""

    files: tuple[str, ...]
    offsets: np.ndarray        # [n_files + 1] global row id of each file's first row
    is_val: np.ndarray         # [N] bool
    train_lens_fraction: float
    chunk: int

    @property
    def n_total(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_train(self) -> int:
        return self.n_total - int(self.is_val.sum())

    def units(self) -> np.ndarray:
        """[n_units, 2] global (start, stop): `chunk` rows of one file each."""
        out = []
        for i in range(len(self.files)):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            starts = np.arange(a, b, self.chunk)
            out.append(np.stack([starts, np.minimum(starts + self.chunk, b)], 1))
        return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def val_rows(n: int, val_fraction: float, seed: int, cap: int | None) -> np.ndarray:
    """The held-out rows: the same permutation as the in-memory split (`trainer.split`), so a set
    small enough for the cap holds out exactly the same rows either way; sorted."""
    perm = np.random.default_rng([seed, 99]).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    if cap is not None:
        n_val = min(n_val, cap)
    return np.sort(perm[:n_val])


def build_index(paths: list[str], val_fraction: float, seed: int, val_max: int | None, chunk: int) -> ShardIndex:
    from lenstrt.data.readers import expand_paths, inspect

    files = expand_paths(paths)
    info = inspect(files)
    counts = [f.n for f in info.files]
    for f in info.files:
        if not f.has_labels:
            raise InputError(f"{f.path}: no 'labels' (1 = lens, 0 = not); training and evaluation need labelled data")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    is_val = np.zeros(int(offsets[-1]), bool)
    is_val[val_rows(len(is_val), val_fraction, seed, val_max)] = True
    labels = np.concatenate([_labels_of(p, n) for p, n in zip(files, counts)])
    frac = float(labels[~is_val].mean()) if (~is_val).any() else 0.5
    return ShardIndex(tuple(str(p) for p in files), offsets, is_val, frac, max(1, int(chunk)))


def read_rows(index: ShardIndex, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the given sorted global rows, read in runs of consecutive rows."""
    from lenstrt.data.readers import CutoutFile

    images: np.ndarray | None = None  # filled in place: no list + concatenate (twice the memory at the peak)
    labels = np.empty(len(rows), np.float32)
    fidx = np.searchsorted(index.offsets, rows, side="right") - 1
    at = 0
    for fi in np.unique(fidx):
        local = rows[fidx == fi] - index.offsets[fi]
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        with CutoutFile(index.files[fi]) as f:
            for run in np.split(local, breaks):
                b = f.read(int(run[0]), int(run[-1]) + 1)
                if images is None:
                    images = np.empty((len(rows), *b.images.shape[1:]), np.float32)
                images[at:at + len(b.images)] = b.images
                labels[at:at + len(b.images)] = b.labels
                at += len(b.images)
    assert images is not None
    return images, labels


def shuffle_buffer_order(rows: np.ndarray, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of `buffer` rows emits `rows` in (fill, then each incoming row
    replaces a random slot whose row is emitted; the rest is emitted shuffled at the end)."""
    n = len(rows)
    if n <= buffer:
        return rows[rng.permutation(n)]
    buf = rows[:buffer].copy()
    slots = rng.integers(0, buffer, size=n - buffer)
    out = np.empty(n, rows.dtype)
    for i, (j, r) in enumerate(zip(slots.tolist(), rows[buffer:].tolist())):
        out[i] = buf[j]
        buf[j] = r
    out[n - buffer:] = buf[rng.permutation(buffer)]
    return out


class ShardStream(IterableDataset):
    """Endless (images, labels) batches of one rank's part of the training rows; see the module doc.

    `start_step`: the number of batches this rank's loader has already delivered (a resume)."""

    def __init__(self, index: ShardIndex, batch_size: int, seed: int, buffer: int = 2048, rank: int = 0,
                 world_size: int = 1, start_step: int = 0):
        self.index, self.bs, self.seed, self.buffer = index, batch_size, seed, max(1, buffer)
        self.rank, self.world, self.start = rank, world_size, start_step
        self._units = index.units()
        cum = np.concatenate([[0], np.cumsum(index.is_val)])
        self._train_rows = (self._units[:, 1] - self._units[:, 0]) - (cum[self._units[:, 1]] - cum[self._units[:, 0]])
        if index.n_train < batch_size * world_size:
            raise InputError(f"{index.n_train} training rows cannot fill one batch of {batch_size} per rank "
                             f"on {world_size} rank(s); lower --batch-size")

    # -- the plan (integers only) ----------------------------------------------------------------
    def _rank_units(self, epoch: int, rank: int) -> np.ndarray:
        deal = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self._units))
        mine = deal[rank::self.world].copy()
        np.random.default_rng([self.seed, epoch, rank, 11]).shuffle(mine)
        return mine

    def batches_per_worker(self, epoch: int, workers: int) -> int:
        """Equal for every worker of every rank: the smallest share decides (DDP needs equal steps)."""
        m = min(int(self._train_rows[self._rank_units(epoch, r)[v::workers]].sum()) // self.bs
                for r in range(self.world) for v in range(workers))
        if m == 0:
            raise InputError(f"{self.index.n_train} training rows in {len(self._units)} read units of "
                             f"{self.index.chunk} rows leave a loader worker without one batch of {self.bs}; "
                             "use fewer workers, a smaller batch or a smaller data.stream_chunk")
        return m

    def epoch_order(self, epoch: int, worker: int, workers: int) -> np.ndarray:
        """Global row ids this (rank, worker) emits in `epoch`, already cut to whole batches."""
        units = self._units[self._rank_units(epoch, self.rank)[worker::workers]]
        rows = np.concatenate([np.arange(a, b) for a, b in units]) if len(units) else np.zeros(0, np.int64)
        rows = rows[~self.index.is_val[rows]]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 13])
        order = shuffle_buffer_order(rows, self.buffer, rng)
        return order[:self.batches_per_worker(epoch, workers) * self.bs]

    # -- reading -----------------------------------------------------------------------------------
    def __iter__(self):
        from lenstrt.data.readers import CutoutFile

        info = torch.utils.data.get_worker_info()
        w, k = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # readers decode and sanitise; the training loop keeps the cores
        # The DataLoader takes batches from its workers round-robin starting at worker 0, so after
        # `start` batches worker w plays the part of worker (w + start) % k of the uninterrupted run.
        v = (w + self.start) % k
        skip = max(0, (self.start - v + k - 1) // k)
        epoch = 0
        while skip >= (m := self.batches_per_worker(epoch, k)):
            skip, epoch = skip - m, epoch + 1
        files: dict[int, CutoutFile] = {}
        try:
            while True:
                yield from self._epoch(epoch, v, k, skip, files)
                skip, epoch = 0, epoch + 1
        finally:
            for f in files.values():
                f.close()

    def _epoch(self, epoch: int, v: int, k: int, skip: int, files: dict):
        from lenstrt.data.readers import CutoutFile

        order = self.epoch_order(epoch, v, k)
        pos = np.full(self.index.n_total, -1, np.int64)
        pos[order] = np.arange(len(order))
        unit_starts = self._units[:, 0]
        pending: dict[int, tuple[np.ndarray, float]] = {}
        for b in range(skip, len(order) // self.bs):
            ids = order[b * self.bs:(b + 1) * self.bs]
            first = b * self.bs
            for g in ids.tolist():
                if g in pending:
                    continue
                u = int(np.searchsorted(unit_starts, g, side="right") - 1)
                a, z = (int(x) for x in self._units[u])
                fi = int(np.searchsorted(self.index.offsets, a, side="right") - 1)
                if fi not in files:
                    if len(files) >= OPEN_FILES:  # thousands of shards: a few open at once (fds, HDF5 caches)
                        files.pop(next(iter(files))).close()
                    files[fi] = CutoutFile(self.index.files[fi])
                else:
                    files[fi] = files.pop(fi)  # most recently used last
                off = int(self.index.offsets[fi])
                batch = files[fi].read(a - off, z - off)
                keep = np.flatnonzero(pos[a:z] >= first)  # rows still to come; earlier ones were emitted
                for i in keep.tolist():
                    pending[a + i] = (batch.images[i].copy(), float(batch.labels[i]))
            items = [pending.pop(g) for g in ids.tolist()]
            yield (torch.from_numpy(np.stack([x for x, _ in items])),
                   torch.tensor([y for _, y in items], dtype=torch.float32))


def bands_survey_scale(path: str) -> tuple[list[str] | None, str, float | None]:
    """Band names, survey and pixel scale of a shard (what checkpoints record): bands and scale as the
    readers parse them (JSON or string-array attributes, WCS), the survey from an HDF5 attribute."""
    from lenstrt.data.readers import CutoutFile

    with CutoutFile(path) as f:
        info = f.info()
    survey = "unknown"
    if path.endswith((".h5", ".hdf5", ".hdf")):
        import h5py

        with h5py.File(path, "r") as h:
            survey = str(h.attrs.get("survey", "unknown"))
    return (list(info.band_names) if info.band_names else None), survey, info.pixel_scale
