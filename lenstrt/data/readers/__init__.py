"""Cutout readers: the one way every stage (train, evaluate, export, serve, cutout) reads images.

One module per on-disk layout, registered by suffix (FITS files are told apart by what they hold):
- `arrays`: HDF5 with an `images` dataset (N, C, H, W) and optional `ids`/`labels`/`flags` and per-row
  columns (our shards; `lenstrt cutout`'s stamps), `.npy` (memory-mapped), `.npz` (key `images`);
- `fits_cube`: FITS cubes, (N, C, H, W), or (C, H, W) for one object with band keywords BAND0, BAND1...;
- `fits_mef`: one object per FITS file, a 2-D image HDU per band (band in FILTER, BAND or EXTNAME),
  MASK / VARIANCE planes skipped;
- `table`: object tables (CSV, Parquet, FITS table) with `id`, `ra`, `dec`, ... and `path` or
  `path_<band>` columns pointing at per-object files, read on a thread pool.
All yield the same Batch. With a ReadSpec (the bundle's bands and size), files that name their bands are
reordered by name, and cutouts a few pixels off are centre-cropped or padded (FLAG_RESIZED). Files are
read in slices, never whole. Non-finite pixels are replaced by the median of the finite pixels of that
cutout and band, and the row is flagged (FLAG_NONFINITE). See docs/survey_data.md.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lenstrt.data.readers import arrays, fits, table  # noqa: F401  (registers the layouts)
from lenstrt.data.readers.base import (
    FLAG_EDGE,
    FLAG_NONFINITE,
    FLAG_RESIZED,
    Batch,
    DatasetInfo,
    FileInfo,
    Layout,
    MismatchError,
    ReadSpec,
    fit_size,
    open_layout,
    sanitize,
    suffix_of,
)
from lenstrt.errors import InputError

__all__ = ["FLAG_EDGE", "FLAG_NONFINITE", "FLAG_RESIZED", "Batch", "CutoutFile", "DatasetInfo", "FileInfo",
           "MismatchError", "ReadSpec", "expand_paths", "inspect", "iter_batches", "load_all", "sanitize"]

_NAMES = {".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npy": "npy", ".npz": "npz", ".csv": "table",
          ".parquet": "table", ".pq": "table"}


def _format(path: Path) -> str | None:
    suf = suffix_of(path)
    return None if suf is None else _NAMES.get(suf, "fits")


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files, directories (their cutout files, sorted) and globs -> a sorted, de-duplicated file list.
    Object tables are read where named (a file or a glob), not picked up from directories: they point
    at files that the directory holds too."""
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
            found = sorted(f for f in path.rglob("*") if f.is_file() and _format(f) not in (None, "table")
                           and not f.name.startswith("."))
            if not found:
                raise InputError(f"{path}: no cutout files (.h5 .npy .npz .fits) in this directory")
            out.extend(found)
        elif path.is_file():
            if not _format(path):
                raise InputError(f"{path}: unsupported file type; use HDF5 (.h5), .npy, .npz, FITS or an object "
                                 "table (.csv, .parquet)")
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    seen: dict[str, Path] = {}
    for p in out:
        seen.setdefault(str(p.resolve()), p)
    return list(seen.values())


class CutoutFile:
    """One open cutout source (a file, or an object table and the files it lists), read in row slices.
    Use as a context manager. `spec` (a bundle's bands, size and the columns to carry) is optional."""

    def __init__(self, path: str | Path, spec: ReadSpec | None = None):
        self.path = Path(path)
        self.spec = spec or ReadSpec()
        self.format = _format(self.path) or "?"
        try:
            self._layout: Layout = open_layout(self.path, self.spec)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.path}: cannot read as {self.format} ({type(exc).__name__}: {exc}); "
                             "the file may be truncated or corrupt, re-create or re-download it") from exc
        lay = self._layout
        self.format = lay.format
        if lay.n == 0:
            lay.close()
            raise InputError(f"{self.path}: the file holds no cutouts")
        c, h, w = lay.shape
        self._resize = bool(self.spec.size) and not lay.sized and (h, w) != tuple(self.spec.size or ())
        if self._resize:
            try:
                fit_size(np.zeros((0, c, h, w), np.float32), self.spec.size, str(self.path))
            except InputError:
                lay.close()
                raise
        self._avail = lay.column_names()
        if self.spec.keep is None:
            self._keep = tuple(k for k in ("ra", "dec") if k in self._avail)
        else:
            missing = [k for k in self.spec.keep if k not in self._avail]
            if missing:
                lay.close()
                raise MismatchError(f"{self.path}: no column {', '.join(missing)} to keep (per-row columns here: "
                                 f"{', '.join(self._avail) or 'none'}); drop it from --keep-columns")
            self._keep = tuple(self.spec.keep)

    @classmethod
    def for_bundle(cls, path: str | Path, bundle_input: dict, keep: tuple[str, ...] | None = None) -> CutoutFile:
        """Opened for a bundle (its manifest's `input` section): its bands, in its order; its size."""
        return cls(path, ReadSpec.for_input(bundle_input, keep))

    def __enter__(self) -> CutoutFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._layout is not None:
            self._layout.close()
            self._layout = None  # type: ignore[assignment]

    @property
    def n(self) -> int:
        return int(self._layout.n)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the batches this file yields."""
        c, h, w = self._layout.shape
        return (c, *self.spec.size) if self._resize and self.spec.size else (c, h, w)

    def info(self) -> FileInfo:
        c, h, w = self.shape
        lay = self._layout
        return FileInfo(str(self.path), self.format, self.n, int(c), int(h), int(w), lay.ids(0, 1) is not None,
                        lay.labels(0, 1) is not None, lay.band_names, lay.pixel_scale, tuple(self._avail))

    def extra(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """A per-row column other than images/ids/labels (e.g. kind, theta_e, ra), or None."""
        if name in ("images", "ids", "labels"):
            return None
        try:
            return np.asarray(self._layout.column(name, start, self.n if stop is None else stop))
        except KeyError:
            return None

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> Batch:
        """Rows start..stop. `out`: a float32 C-contiguous buffer of at least that many rows of this file's
        shape; the images are decoded into it and the batch's images are a view of it (serve's batch
        buffers: no array allocated and no second copy per batch)."""
        lay = self._layout
        direct = out is not None and not self._resize
        try:
            if direct:
                flags = lay.read_into(start, stop, out)
                raw = out[:stop - start]
            else:
                raw, flags = lay.read(start, stop)
            ids = lay.ids(start, stop)
            labels = lay.labels(start, stop)
            cols = {k: _text(np.asarray(lay.column(k, start, stop))) for k in self._keep}
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{self.path}: rows {start}-{stop} unreadable ({type(exc).__name__}: {exc}); "
                             "the file is truncated or corrupt") from exc
        if self._resize:
            raw, changed = fit_size(raw, self.spec.size, str(self.path))
            if changed:
                flags = flags | FLAG_RESIZED
        if out is not None and not direct:
            out[:len(raw)] = raw
            raw = out[:len(raw)]
        images, nonfinite = sanitize(raw, inplace=out is not None)
        if out is not None and images is not raw:  # the caller feeds its buffer, not our Batch, to the model
            out[:len(images)] = images
            images = out[:len(images)]
        index = np.arange(start, start + len(images), dtype=np.int64)
        id_list = ids if ids is not None else [f"{self.path.name}:{i}" for i in index]
        return Batch(images, id_list, str(self.path), index, (flags | nonfinite).astype(np.int32), labels, cols)


def _text(arr: np.ndarray) -> np.ndarray:
    """HDF5 and FITS strings are bytes; catalog columns are text."""
    return arr.astype(str) if arr.dtype.kind == "S" else arr


def inspect(paths: str | Path | Iterable[str | Path], spec: ReadSpec | None = None) -> DatasetInfo:
    """Shapes and counts of every file, checked for consistency, before any work."""
    infos = []
    for p in expand_paths(paths):
        with CutoutFile(p, spec) as f:
            infos.append(f.info())
    first = infos[0]
    for fi in infos[1:]:
        if (fi.bands, fi.height, fi.width) != (first.bands, first.height, first.width):
            raise InputError(f"{fi.path}: cutouts are {fi.bands}x{fi.height}x{fi.width} but {first.path} has "
                             f"{first.bands}x{first.height}x{first.width}; one run needs one shape")
    return DatasetInfo(tuple(infos))


def iter_batches(paths: str | Path | Iterable[str | Path], batch_size: int,
                 spec: ReadSpec | None = None) -> Iterator[Batch]:
    """Batches in file order; a batch never spans two files (so `source` is one file)."""
    for p in expand_paths(paths):
        with CutoutFile(p, spec) as f:
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
