"""Which FITS layout a file is, from what it holds: an object table (a binary table with `id` and
`path` columns), a cube (a 3-D or 4-D image HDU), or per-band 2-D image HDUs of one object."""

from __future__ import annotations

from pathlib import Path

from lenstrt.data.readers import fitsutil
from lenstrt.data.readers.base import FITS_SUFFIXES, Layout, ReadSpec, register


def _is_object_table(hdu) -> bool:
    if hdu.is_image or not hasattr(hdu, "columns"):
        return False
    names = [n.lower() for n in hdu.columns.names]
    return "id" in names and any(n == "path" or n.startswith("path_") for n in names)


@register("fits", FITS_SUFFIXES)
def open_fits(path: Path, spec: ReadSpec) -> Layout | None:
    from astropy.io import fits

    hdul = fits.open(path, memmap=True)
    try:
        if any(_is_object_table(h) for h in hdul[1:]):
            from lenstrt.data.readers.table import TableLayout

            hdul.close()
            return TableLayout(path, spec)
        cubes = [i for i in fitsutil.image_hdus(hdul, 3)] + [i for i in fitsutil.image_hdus(hdul, 4)]
        if cubes:
            from lenstrt.data.readers.fits_cube import CubeLayout

            return CubeLayout(path, spec, hdul, min(cubes))  # owns hdul from here on
        planes = fitsutil.image_hdus(hdul, 2)
        hdul.close()
        if planes:
            from lenstrt.data.readers.fits_mef import MEFLayout

            return MEFLayout(path, spec)
        return None
    except BaseException:
        hdul.close()
        raise
