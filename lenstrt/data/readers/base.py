"""What every reader layout shares: the Batch it yields, the read spec it honours, and the registry
that picks a layout for a path (by suffix, then by what a FITS file holds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lenstrt.errors import InputError

FLAG_NONFINITE = 1   # non-finite pixels filled with the cutout-band median (NaN padding included)
FLAG_RESIZED = 2     # centre-cropped or padded to the bundle's size
FLAG_EDGE = 4        # cut from a survey tile near its edge: part of the stamp is padding (`lenstrt cutout`)

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fits.fz", ".fz")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class MismatchError(InputError):
    """Readable input that does not fit the consumer (bands, size, pixel scale, columns): one error for
    the run, never a file recorded and skipped."""


@dataclass
class Batch:
    images: np.ndarray            # float32 [N, C, H, W], finite
    ids: list[str]
    source: str                   # file the rows came from
    index: np.ndarray             # int64 [N] row index inside that file
    flags: np.ndarray             # int32 [N] bit flags (FLAG_*)
    labels: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-row input columns carried (ra, dec, ...)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ReadSpec:
    """What the consumer (a bundle) wants; without one a file is read as it is."""
    bands: tuple[str, ...] | None = None   # files that name their bands are reordered to these, by name
    size: tuple[int, int] | None = None    # (H, W): a few pixels off is centre-cropped or padded (flagged)
    keep: tuple[str, ...] | None = None    # per-row columns to carry; None = ra and dec where present

    @classmethod
    def for_input(cls, bundle_input: dict, keep: tuple[str, ...] | None = None) -> ReadSpec:
        """From a bundle manifest's `input` section (bands, shape [-1, C, H, W])."""
        return cls(tuple(bundle_input["bands"]), tuple(int(x) for x in bundle_input["shape"][2:]),
                   tuple(keep) if keep is not None else None)


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
    band_names: tuple[str, ...] | None = None
    pixel_scale: float | None = None      # arcsec / px, from a WCS or the file's attributes
    columns: tuple[str, ...] = ()


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


class Layout:
    """One on-disk layout, opened. Subclasses fill the fields in __init__ and implement `read`.

    `read(start, stop)` returns (raw images [n, C, h, w] in the spec's band order where the layout knows
    band names, per-row flags); CutoutFile does the rest (sizes, non-finite pixels, ids, columns)."""

    format = "?"
    n: int
    shape: tuple[int, int, int]                # C, h, w as delivered by read()
    band_names: tuple[str, ...] | None = None  # in delivered order
    pixel_scale: float | None = None
    sized: bool = False                        # read() already fits every row to spec.size (per-object layouts)

    def __init__(self, path: Path, spec: ReadSpec):
        self.path, self.spec = path, spec

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows start..stop into `out[:stop - start]` (float32, C-contiguous), returning the flags. Layouts
        that can decode straight into the caller's buffer override it (no array allocated per batch)."""
        raw, flags = self.read(start, stop)
        out[:len(raw)] = raw
        return flags

    def ids(self, start: int, stop: int) -> list[str] | None:
        return None

    def labels(self, start: int, stop: int) -> np.ndarray | None:
        return None

    def column_names(self) -> tuple[str, ...]:
        return ()

    def column(self, name: str, start: int, stop: int) -> np.ndarray:
        raise KeyError(name)

    def close(self) -> None:
        pass


# name -> (suffixes, opener). An opener returns a Layout, or None to let the next candidate try
# (several layouts share .fits; each looks at what the file holds).
_REGISTRY: dict[str, tuple[tuple[str, ...], Callable[[Path, ReadSpec], Layout | None]]] = {}


def register(name: str, suffixes: tuple[str, ...]):
    def deco(opener):
        _REGISTRY[name] = (suffixes, opener)
        return opener
    return deco


def suffix_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffixes, _ in _REGISTRY.values():
        for suf in suffixes:
            if name.endswith(suf):
                return suf
    return None


def open_layout(path: Path, spec: ReadSpec) -> Layout:
    name = path.name.lower()
    tried = []
    for fmt, (suffixes, opener) in _REGISTRY.items():
        if any(name.endswith(s) for s in suffixes):
            tried.append(fmt)
            layout = opener(path, spec)
            if layout is not None:
                return layout
    if not tried:
        raise InputError(f"{path}: unsupported file type; use HDF5 (.h5), .npy, .npz, FITS or an object table "
                         "(.csv, .parquet)")
    raise InputError(f"{path}: no cutouts found: not a cube, per-band image HDUs or an object table; see "
                     "docs/survey_data.md for the layouts read")


# -- shared helpers ---------------------------------------------------------------------------------------

def _tokens(name: str) -> list[str]:
    import re

    return [t for t in re.split(r"[\s\-_./:,;()]+", name.strip().lower()) if t]


def band_matches(name: str, want: str) -> bool:
    """A header's band name against a bundle band: exact (any case), or one token of it ('HSC-G',
    'g DECam SDSS c0001 4720.0 1520.0', 'HSC-I2' and 'EUC_VIS' name g, g, i and VIS)."""
    name, want = name.strip().lower(), want.strip().lower()
    if name == want:
        return True
    # a token equal to the band, or the band plus a digit suffix (HSC's i2 and r2 filters)
    return any(t == want or (t.startswith(want) and t[len(want):].isdigit()) for t in _tokens(name))


def band_order(have: tuple[str, ...], want: tuple[str, ...], where: str) -> list[int]:
    """Indices into `have` giving `want`'s order; a missing or ambiguous band is one error naming it."""
    order = []
    for w in want:
        hits = [i for i, h in enumerate(have) if band_matches(h, w)]
        if len(hits) > 1:  # prefer an exact name over a token match
            exact = [i for i in hits if have[i].strip().lower() == w.lower()]
            hits = exact if len(exact) == 1 else hits
        if not hits:
            raise MismatchError(f"{where}: no band '{w}' (found {', '.join(have) or 'no band names'}); the bundle needs "
                             f"bands {', '.join(want)}: add the missing band's image")
        if len(hits) > 1:
            raise MismatchError(f"{where}: band '{w}' matches {', '.join(have[i] for i in hits)}; name each band once")
        order.append(hits[0])
    return order


def max_resize(size: int) -> int:
    """Largest size difference (pixels) fixed by crop or pad: survey cutout services are often off by
    one or a few pixels; beyond this the object scale seen by the model changes too much."""
    return max(4, size // 8)


def fit_size(images: np.ndarray, size: tuple[int, int] | None, where: str) -> tuple[np.ndarray, bool]:
    """[n, C, h, w] centre-cropped or NaN-padded to `size`; True when that changed anything."""
    if size is None or images.shape[-2:] == tuple(size):
        return images, False
    h, w = images.shape[-2:]
    H, W = size
    if abs(h - H) > max_resize(H) or abs(w - W) > max_resize(W):
        raise MismatchError(f"{where}: cutouts are {h}x{w} px, the bundle expects {H}x{W} px (at most "
                         f"{max_resize(H)} px difference is cropped or padded); re-make the cutouts at {H}x{W}")
    out = np.full(images.shape[:-2] + (H, W), np.nan, dtype=np.float32)
    sy, sx = max(0, (h - H) // 2), max(0, (w - W) // 2)    # crop offsets in the input
    dy, dx = max(0, (H - h) // 2), max(0, (W - w) // 2)    # pad offsets in the output
    ch, cw = min(h, H), min(w, W)
    out[..., dy:dy + ch, dx:dx + cw] = images[..., sy:sy + ch, sx:sx + cw]
    return out, True


def sanitize(raw: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float32 with non-finite pixels filled by the cutout-band median, plus per-row flags.

    Hot path of every read: a float32 array the reader just made (h5py, FITS) is used in place, not
    copied again (`inplace`: nor a view of the caller's batch buffer); and a finite batch is recognised
    by its row sums (no per-pixel mask: a NaN or inf makes its row's sum non-finite; a sum that
    overflows only sends that row down the exact path). Not a BLAS product: its threads would fight
    the reader processes for the cores."""
    owned = raw.dtype == np.float32 and raw.flags.writeable and raw.flags.c_contiguous and (raw.base is None or inplace)
    images = raw if owned else np.array(raw, dtype=np.float32, copy=True)
    flags = np.zeros(len(images), dtype=np.int32)
    if not images.size:
        return images, flags
    flat = images.reshape(len(images), -1)
    suspect = np.flatnonzero(~np.isfinite(flat.sum(axis=1)))
    if not len(suspect):
        return images, flags
    for r in suspect:
        bad = ~np.isfinite(images[r])
        if not bad.any():
            continue
        for c in range(images.shape[1]):
            m = bad[c]
            if m.any():
                good = images[r, c][~m]
                images[r, c][m] = np.median(good) if good.size else 0.0
        flags[r] |= FLAG_NONFINITE
    return images, flags
