"""FITS cubes: (N, C, H, W) for many cutouts, or (C, H, W) for one (the Legacy Surveys' cutouts, with
per-plane band keywords BAND0, BAND1, ...). Memory-mapped and read in row slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenstrt.data.readers import fitsutil
from lenstrt.data.readers.base import Layout, ReadSpec, band_order


class CubeLayout(Layout):
    format = "fits"

    def __init__(self, path: Path, spec: ReadSpec, hdul, index: int):
        super().__init__(path, spec)
        self._hdul = hdul
        hdu = hdul[index]
        data = hdu.data
        self.single = data.ndim == 3
        self._images = data[None] if self.single else data
        c, h, w = (int(x) for x in self._images.shape[1:])
        names = fitsutil.cube_bands(hdu.header, c)
        self._order = None
        if names and spec.bands:
            order = band_order(names, spec.bands, str(path))
            self._order = None if order == list(range(c)) else order
            names, c = spec.bands, len(order)
        self.n, self.shape, self.band_names = int(self._images.shape[0]), (c, h, w), names
        self.pixel_scale = fitsutil.pixel_scale(hdu.header)
        self._radec = fitsutil.centre_radec(hdu.header, h, w) if self.single else None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(self._images[start:stop])
        if self._order is not None:
            raw = raw[:, self._order]
        return raw, np.zeros(len(raw), np.int32)

    def ids(self, start, stop):
        return [self.path.name.split(".")[0]] if self.single else None

    def column_names(self):
        return ("ra", "dec") if self._radec else ()

    def column(self, name, start, stop):
        return np.array([self._radec[("ra", "dec").index(name)]], dtype=np.float64)

    def close(self):
        self._hdul.close()
