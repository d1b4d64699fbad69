"""Array files: HDF5 (our shards, `lenstrt cutout`'s stamps), .npy (memory-mapped) and .npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lenstrt.data.readers.base import Layout, ReadSpec, band_order, register
from lenstrt.errors import InputError

_RESERVED = {"images", "ids", "labels", "flags"}


def _check_rank(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 4:
        raise InputError(f"{path}: images have shape {tuple(shape)}, expected 4-D (N, C, H, W); "
                         "add a band axis for single-band data")


class _ArrayLayout(Layout):
    """Rows of a 4-D array; band names (if the file has them) reorder the band axis."""

    def _setup(self, images, names: tuple[str, ...] | None) -> None:
        _check_rank(self.path, images.shape)
        self._images = images
        self.n = int(images.shape[0])
        c, h, w = (int(x) for x in images.shape[1:])
        self._order = None
        if names and self.spec.bands:
            order = band_order(names, self.spec.bands, str(self.path))
            if order != list(range(c)):
                self._order = order
            names = tuple(names[i] for i in order)
            c = len(order)
        self.shape, self.band_names = (c, h, w), names

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(self._images[start:stop])
        if self._order is not None:
            raw = raw[:, self._order]
        return raw, np.zeros(len(raw), np.int32)


@register("hdf5", (".h5", ".hdf5", ".hdf"))
class HDF5Layout(_ArrayLayout):
    format = "hdf5"

    def __init__(self, path: Path, spec: ReadSpec):
        import h5py

        try:  # registers the Blosc/Zstd filters, so compressed shards read like any other
            import hdf5plugin  # noqa: F401
        except ImportError:
            pass
        super().__init__(path, spec)
        self._h5 = h5py.File(path, "r")
        if "images" not in self._h5:
            raise InputError(f"{path}: no 'images' dataset; found {list(self._h5.keys())}")
        names = None
        if "bands" in self._h5.attrs:
            raw = self._h5.attrs["bands"]
            raw = raw.decode() if isinstance(raw, bytes) else raw
            names = tuple(json.loads(raw)) if isinstance(raw, str) and raw.startswith("[") else tuple(
                b.decode() if isinstance(b, bytes) else str(b) for b in np.atleast_1d(raw))  # HDF5 string arrays
        self._setup(self._h5["images"], names)
        self._scale = float(self._h5["images"].attrs.get("scale", 1.0))  # float16 shards (data/shards.py)
        self._scratch: np.ndarray | None = None  # read_into's buffer for stored dtypes other than float32
        ps = self._h5.attrs.get("pixel_scale")
        self.pixel_scale = float(ps) if ps is not None else None
        self._cols = tuple(k for k, v in self._h5.items()
                           if k not in _RESERVED and getattr(v, "shape", None) == (self.n,))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raw, flags = super().read(start, stop)
        if raw.dtype != np.float32:
            raw = raw.astype(np.float32)  # float16 storage: one conversion, then the scale in place
        if self._scale != 1.0:
            raw *= np.float32(self._scale)
        if "flags" in self._h5:  # input flags (e.g. FLAG_EDGE from `lenstrt cutout`)
            flags |= np.asarray(self._h5["flags"][start:stop]).astype(np.int32)
        return raw, flags

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._order is not None:
            return super().read_into(start, stop, out)
        dest = out[:stop - start]
        dt = self._images.dtype
        if dt.kind == "f" and dt.itemsize == 4:  # HDF5 decodes (decompresses, swaps bytes) into the buffer
            self._images.read_direct(dest, np.s_[start:stop])
            if self._scale != 1.0:
                dest *= np.float32(self._scale)
        elif dt != np.float16:  # big-endian float16, float64, integers: numpy's conversion
            return super().read_into(start, stop, out)
        else:  # float16 storage: read as stored, widen in torch (vectorised F16C: ~5x numpy, ~6x HDF5's own)
            import torch

            if self._scratch is None or len(self._scratch) < len(dest):
                self._scratch = np.empty(dest.shape, self._images.dtype)
            raw = self._scratch[:len(dest)]
            self._images.read_direct(raw, np.s_[start:stop])
            wide = torch.from_numpy(dest).copy_(torch.from_numpy(raw))
            if self._scale != 1.0:
                wide.mul_(self._scale)
        flags = np.zeros(stop - start, np.int32)
        if "flags" in self._h5:
            flags |= np.asarray(self._h5["flags"][start:stop]).astype(np.int32)
        return flags

    def ids(self, start, stop):
        if "ids" not in self._h5:
            return None
        return [i.decode() if isinstance(i, bytes) else str(i) for i in self._h5["ids"][start:stop]]

    def labels(self, start, stop):
        return np.asarray(self._h5["labels"][start:stop]).astype(np.int64) if "labels" in self._h5 else None

    def column_names(self):
        return self._cols

    def column(self, name, start, stop):
        return np.asarray(self._h5[name][start:stop])

    def close(self):
        self._h5.close()


@register("npy", (".npy",))
class NpyLayout(_ArrayLayout):
    format = "npy"

    def __init__(self, path: Path, spec: ReadSpec):
        super().__init__(path, spec)
        self._setup(np.load(path, mmap_mode="r", allow_pickle=False), None)


@register("npz", (".npz",))
class NpzLayout(_ArrayLayout):
    format = "npz"

    def __init__(self, path: Path, spec: ReadSpec):
        super().__init__(path, spec)
        z = np.load(path, allow_pickle=False)
        if "images" not in z.files:
            raise InputError(f"{path}: no 'images' array; found {z.files}")
        self._z = {k: z[k] for k in z.files}
        self._setup(self._z["images"], None)

    def ids(self, start, stop):
        return [str(i) for i in self._z["ids"][start:stop]] if "ids" in self._z else None

    def labels(self, start, stop):
        return self._z["labels"][start:stop].astype(np.int64) if "labels" in self._z else None

    def column_names(self):
        return tuple(k for k, v in self._z.items() if k not in _RESERVED and v.shape == (self.n,))

    def column(self, name, start, stop):
        return self._z[name][start:stop]
