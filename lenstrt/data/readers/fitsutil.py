"""FITS header conventions shared by the FITS layouts: which HDU is the image, what band it is, and
what its WCS says (pixel scale, centre). astropy does the parsing; this only encodes survey habits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lenstrt.data.readers.base import _tokens, band_matches, band_order
from lenstrt.errors import InputError

# EXTNAME words of planes that travel with an image but are not one (HSC: MASK, VARIANCE; DES: WGT; ...)
AUX_WORDS = {"mask", "msk", "variance", "var", "weight", "wgt", "wht", "ivar", "invvar", "err", "error", "sigma", "rms",
             "noise", "psf", "flags", "dq", "bpm", "exposure", "exp", "bkg", "background", "model", "resid"}
GENERIC_EXTNAMES = {"", "primary", "image", "sci", "science", "flux", "data", "compressed_image"}
BAND_KEYS = ("FILTER", "BAND", "FILTNAME", "FILTER1")


def is_aux(hdu) -> bool:
    return any(t in AUX_WORDS for t in _tokens(str(hdu.header.get("EXTNAME", ""))))


def image_hdus(hdul, ndim: int = 2) -> list[int]:
    """Indices of HDUs with `ndim`-D pixel data that are images (not MASK/VARIANCE/... planes)."""
    out = []
    for i, h in enumerate(hdul):
        naxis = h.header.get("ZNAXIS", h.header.get("NAXIS", 0)) if h.is_image else 0
        if naxis == ndim and not is_aux(h):
            out.append(i)
    return out


def band_of(hdu, primary_header=None) -> str | None:
    """FILTER / BAND keyword of the HDU, else a non-generic EXTNAME, else the primary header's filter."""
    for key in BAND_KEYS:
        if str(hdu.header.get(key, "")).strip():
            return str(hdu.header[key]).strip()
    ext = str(hdu.header.get("EXTNAME", "")).strip()
    if ext.lower() not in GENERIC_EXTNAMES:
        return ext
    if primary_header is not None:
        for key in BAND_KEYS:
            if str(primary_header.get(key, "")).strip():
                return str(primary_header[key]).strip()
    return None


def cube_bands(header, c: int) -> tuple[str, ...] | None:
    """Per-plane band keywords of a cube: BAND0..BAND{c-1} (Legacy Surveys), or BAND1..BAND{c}."""
    for first in (0, 1):
        names = [str(header.get(f"BAND{first + k}", "")).strip() for k in range(c)]
        if all(names):
            return tuple(names)
    return None


def celestial_wcs(header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header).celestial
        except Exception:
            return None
    return w if w.has_celestial and w.naxis == 2 else None


def pixel_scale(header) -> float | None:
    """arcsec / px along the mean of the two celestial axes, or None without a celestial WCS."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    w = celestial_wcs(header)
    if w is None:
        return None
    scales = proj_plane_pixel_scales(w)
    units = [str(u) for u in w.wcs.cunit]
    if not all(u in ("deg", "") for u in units) or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return None
    return float(np.mean(scales) * 3600.0)


def centre_radec(header, h: int, w: int) -> tuple[float, float] | None:
    wcs = celestial_wcs(header)
    if wcs is None:
        return None
    ra, dec = wcs.pixel_to_world_values((w - 1) / 2.0, (h - 1) / 2.0)
    return float(ra), float(dec)


def open_fits(path: Path):
    from astropy.io import fits

    return fits.open(path, memmap=False, lazy_load_hdus=False)


class ObjectImage:
    """One object's bands from one FITS file (a cube with band keywords, or a 2-D image HDU per band),
    in the wanted band order, with the header that carries its WCS."""

    def __init__(self, images: np.ndarray, bands: tuple[str, ...] | None, header):
        self.images, self.bands, self.header = images, bands, header


def read_object(path: Path, want: tuple[str, ...] | None, where: str | None = None) -> ObjectImage:
    where = where or str(path)
    with open_fits(path) as hdul:
        cubes = image_hdus(hdul, 3)
        if cubes:
            hdu = hdul[cubes[0]]
            data = np.asarray(hdu.data)
            names = cube_bands(hdu.header, data.shape[0])
            if want and names:
                data = data[band_order(names, want, where)]
                names = want
            return ObjectImage(data, names, hdu.header)
        planes = image_hdus(hdul, 2)
        if not planes:
            raise InputError(f"{where}: no image HDU (2-D or 3-D pixel data other than MASK/VARIANCE planes)")
        primary = hdul[0].header
        found = [band_of(hdul[i], primary) for i in planes]
        if len(planes) > 1 and not all(found):
            raise InputError(f"{where}: {len(planes)} image HDUs, not all with a band name (FILTER, BAND or EXTNAME); "
                             "name each band's HDU")
        names = tuple(str(b) for b in found) if all(found) else None
        idx = list(range(len(planes)))
        if want and names:
            idx = band_order(names, want, where)
            names = want
        data = np.stack([np.asarray(hdul[planes[i]].data, dtype=np.float32) for i in idx])
        header = hdul[planes[idx[0]]].header.copy()
        if not any(k in header for k in ("CTYPE1", "CD1_1", "PC1_1")):
            header = primary.copy()  # some services keep the WCS in the primary header only
        return ObjectImage(data, names, header)


def read_band_image(path: Path, hdu: str | int | None, band: str, where: str) -> tuple[np.ndarray, object]:
    """One band's 2-D image from a per-band file: the named HDU, else the first image HDU (MASK and
    VARIANCE planes skipped) whose band matches or that names none. HDUs are parsed lazily and the scan
    stops there: the planes after the image are never parsed (3x faster on HSC's 4-HDU files)."""
    from astropy.io import fits

    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        if hdu is not None and str(hdu).strip() != "":
            key = int(hdu) if str(hdu).strip().lstrip("-").isdigit() else str(hdu)
            try:
                h = hdul[key]
            except (KeyError, IndexError):
                raise InputError(f"{where}: {path} has no HDU {hdu!r}; fix the hdu_{band} column") from None
            return np.asarray(h.data, dtype=np.float32), h.header
        primary = hdul[0].header
        seen = []
        i = 0
        while True:
            try:
                h = hdul[i]
            except IndexError:
                break
            i += 1
            naxis = h.header.get("ZNAXIS", h.header.get("NAXIS", 0)) if h.is_image else 0
            if naxis != 2 or is_aux(h):
                continue
            named = band_of(h, primary)
            if named and not band_matches(named, band):  # a swapped path_<band> column scores nonsense silently
                seen.append(named)
                continue
            return np.asarray(h.data, dtype=np.float32), h.header
        if seen:
            raise InputError(f"{where}: {path} holds band(s) {', '.join(seen)} by its header, listed as {band}; fix "
                             f"the path_{band} column (or name the HDU in hdu_{band})")
        raise InputError(f"{where}: {path} has no 2-D image HDU for band {band}")
