"""One object per multi-extension FITS file, a 2-D image HDU per band (band in FILTER, BAND or
EXTNAME, in any order); MASK / VARIANCE planes beside an image are skipped. A single-band file of this
kind (HSC's per-band cutouts) is read the same way; object tables combine such files per band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenstrt.data.readers import fitsutil
from lenstrt.data.readers.base import Layout, ReadSpec


class MEFLayout(Layout):
    format = "fits-mef"

    def __init__(self, path: Path, spec: ReadSpec):
        super().__init__(path, spec)
        obj = fitsutil.read_object(path, spec.bands)
        self._images = obj.images[None]
        self.n, self.shape, self.band_names = 1, tuple(int(x) for x in obj.images.shape), obj.bands
        self.pixel_scale = fitsutil.pixel_scale(obj.header)
        self._radec = fitsutil.centre_radec(obj.header, *obj.images.shape[-2:])

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raw = self._images[start:stop]
        return raw, np.zeros(len(raw), np.int32)

    def ids(self, start, stop):
        return [self.path.name.split(".")[0]][start:stop]

    def column_names(self):
        return ("ra", "dec") if self._radec else ()

    def column(self, name, start, stop):
        return np.array([self._radec[("ra", "dec").index(name)]], dtype=np.float64)[start:stop]
