"""Cutout readers: the one way every stage reads images.

Accepted: HDF5 with an `images` dataset (N, C, H, W) and optional `ids`/`labels` (our shards are
such files), `.npy` (memory-mapped), `.npz` (key `images`, optional `ids`/`labels`), FITS cubes
(primary or first image HDU, (N, C, H, W) or (C, H, W) for one cutout), and directories or globs of
these. Files are read in slices, never whole. Non-finite pixels are replaced by the median of the
finite pixels of that cutout and band, and the row is flagged (FLAG_NONFINITE).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenstrt.errors import InputError

FLAG_NONFINITE = 1
SUFFIXES = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npy": "npy", ".npz": "npz",
            ".fits": "fits", ".fit": "fits", ".fits.gz": "fits"}


@dataclass
class Batch:
    images: np.ndarray            # float32 [N, C, H, W], finite
    ids: list[str]
    source: str                   # file the rows came from
    index: np.ndarray             # int64 [N] row index inside that file
    flags: np.ndarray             # int32 [N] bit flags (FLAG_NONFINITE)
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class FileInfo:
    path: str
    format: str
    n: int
    bands: int
    height: int
    width: int
    has_ids: bool
    has_labels: bool


@dataclass(frozen=True)
class DatasetInfo:
    files: tuple[FileInfo, ...]

    @property
    def n(self) -> int:
        return sum(f.n for f in self.files)

    @property
    def shape(self) -> tuple[int, int, int]:
        f = self.files[0]
        return f.bands, f.height, f.width


def _format(path: Path) -> str | None:
    name = path.name.lower()
    for suf, fmt in SUFFIXES.items():
        if name.endswith(suf):
            return fmt
    return None


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files, directories (their cutout files, sorted) and globs -> a sorted, de-duplicated file list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if any(ch in s for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(s, recursive=True))
            if not hits:
                raise InputError(f"{s}: the pattern matches no files; check the path")
            out.extend(h for h in hits if h.is_file() and _format(h))
            continue
        path = Path(s)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and _format(f) and not f.name.startswith("."))
            if not found:
                raise InputError(f"{path}: no cutout files (.h5 .npy .npz .fits) in this directory")
            out.extend(found)
        elif path.is_file():
            if not _format(path):
                raise InputError(f"{path}: unsupported file type; use HDF5 (.h5), .npy, .npz or FITS")
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    seen: dict[str, Path] = {}
    for p in out:
        seen.setdefault(str(p.resolve()), p)
    return list(seen.values())


class CutoutFile:
    """One open cutout file, read in row slices. Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = _format(self.path) or "?"
        self._h5 = None
        self._ids = None
        self._labels = None
        try:
            self._open()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.path}: cannot read as {self.format} ({type(exc).__name__}: {exc}); "
                             "the file may be truncated or corrupt, re-create or re-download it") from exc
        shape = self._images.shape
        if len(shape) != 4:
            raise InputError(f"{self.path}: images have shape {tuple(shape)}, expected 4-D (N, C, H, W); "
                             "add a band axis for single-band data")
        if shape[0] == 0:
            raise InputError(f"{self.path}: the file holds no cutouts")

    def _open(self) -> None:
        if self.format == "hdf5":
            import h5py

            self._h5 = h5py.File(self.path, "r")
            if "images" not in self._h5:
                raise InputError(f"{self.path}: no 'images' dataset; found {list(self._h5.keys())}")
            self._images = self._h5["images"]
            self._ids = self._h5["ids"] if "ids" in self._h5 else None
            self._labels = self._h5["labels"] if "labels" in self._h5 else None
        elif self.format == "npy":
            self._images = np.load(self.path, mmap_mode="r", allow_pickle=False)
        elif self.format == "npz":
            z = np.load(self.path, allow_pickle=False)
            if "images" not in z.files:
                raise InputError(f"{self.path}: no 'images' array; found {z.files}")
            self._images = z["images"]
            self._ids = z["ids"] if "ids" in z.files else None
            self._labels = z["labels"] if "labels" in z.files else None
        elif self.format == "fits":
            from astropy.io import fits

            self._fits = fits.open(self.path, memmap=True)
            hdu = next((h for h in self._fits if getattr(h, "data", None) is not None and h.data.ndim >= 3), None)
            if hdu is None:
                raise InputError(f"{self.path}: no image cube (3-D or 4-D HDU) in this FITS file")
            data = hdu.data
            self._images = data[None] if data.ndim == 3 else data
        else:
            raise InputError(f"{self.path}: unsupported file type")

    def __enter__(self) -> CutoutFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        if getattr(self, "_fits", None) is not None:
            self._fits.close()
            self._fits = None

    @property
    def n(self) -> int:
        return int(self._images.shape[0])

    def info(self) -> FileInfo:
        _, c, h, w = self._images.shape
        return FileInfo(str(self.path), self.format, self.n, int(c), int(h), int(w),
                        self._ids is not None, self._labels is not None)

    def extra(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """A per-row dataset other than images/ids/labels (HDF5 only; e.g. kind, theta_e, arc_snr)."""
        if self._h5 is None or name not in self._h5:
            return None
        return np.asarray(self._h5[name][start:stop])

    def read(self, start: int, stop: int) -> Batch:
        try:
            raw = np.asarray(self._images[start:stop])
            ids = None if self._ids is None else self._ids[start:stop]
            labels = None if self._labels is None else np.asarray(self._labels[start:stop]).astype(np.int64)
        except Exception as exc:
            raise InputError(f"{self.path}: rows {start}-{stop} unreadable ({type(exc).__name__}: {exc}); "
                             "the file is truncated or corrupt") from exc
        images, flags = sanitize(raw)
        index = np.arange(start, start + len(images), dtype=np.int64)
        if ids is None:
            id_list = [f"{self.path.name}:{i}" for i in index]
        else:
            id_list = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        return Batch(images, id_list, str(self.path), index, flags, labels)


def sanitize(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copy with non-finite pixels filled by the cutout-band median, plus per-row flags."""
    images = np.array(raw, dtype=np.float32, copy=True)
    flags = np.zeros(len(images), dtype=np.int32)
    bad = ~np.isfinite(images)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=(1, 2, 3)))
        for r in rows:
            for c in range(images.shape[1]):
                m = bad[r, c]
                if m.any():
                    good = images[r, c][~m]
                    images[r, c][m] = np.median(good) if good.size else 0.0
        flags[rows] |= FLAG_NONFINITE
    return images, flags


def inspect(paths: str | Path | Iterable[str | Path]) -> DatasetInfo:
    """Shapes and counts of every file, checked for consistency, before any work."""
    infos = []
    for p in expand_paths(paths):
        with CutoutFile(p) as f:
            infos.append(f.info())
    first = infos[0]
    for fi in infos[1:]:
        if (fi.bands, fi.height, fi.width) != (first.bands, first.height, first.width):
            raise InputError(f"{fi.path}: cutouts are {fi.bands}x{fi.height}x{fi.width} but {first.path} has "
                             f"{first.bands}x{first.height}x{first.width}; one run needs one shape")
    return DatasetInfo(tuple(infos))


def iter_batches(paths: str | Path | Iterable[str | Path], batch_size: int) -> Iterator[Batch]:
    """Batches in file order; a batch never spans two files (so `source` is one file)."""
    for p in expand_paths(paths):
        with CutoutFile(p) as f:
            for start in range(0, f.n, batch_size):
                yield f.read(start, min(f.n, start + batch_size))


def load_all(paths: str | Path | Iterable[str | Path], extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Whole data set in memory (training and evaluation sets): images, labels, ids, and any `extra`
    per-row datasets present in every HDF5 file (e.g. theta_e, arc_snr, kind)."""
    parts: dict[str, list] = {"images": [], "labels": [], "ids": [], "flags": []}
    extras: dict[str, list] = {k: [] for k in extra}
    for p in expand_paths(paths):
        with CutoutFile(p) as f:
            b = f.read(0, f.n)
            if b.labels is None:
                raise InputError(f"{p}: no 'labels' (1 = lens, 0 = not); training and evaluation need labelled data")
            parts["images"].append(b.images)
            parts["labels"].append(b.labels)
            parts["ids"].append(np.array(b.ids))
            parts["flags"].append(b.flags)
            for k in extra:
                extras[k].append(f.extra(k))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    for k, v in extras.items():
        if all(x is not None for x in v):
            out[k] = np.concatenate(v)
    return out
