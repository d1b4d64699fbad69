"""Object tables (CSV, Parquet or a FITS binary table): one row per object with `id`, optional `ra`,
`dec` and other columns, and where its pixels are: `path` (one file holding every band: a cube or a
FITS file with an image HDU per band) or `path_<band>` per band (optionally `hdu_<band>`: HDU index
or EXTNAME). Relative paths are relative to the table. Rows are read on a thread pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenstrt.data.readers import fitsutil
from lenstrt.data.readers.base import (
    FLAG_RESIZED,
    TABLE_SUFFIXES,
    Layout,
    ReadSpec,
    band_order,
    fit_size,
    register,
)
from lenstrt.data.readers.pool import pmap
from lenstrt.errors import InputError

_STRUCTURAL = ("id", "path", "hdu", "label")


def load_table(path: Path) -> dict[str, np.ndarray]:
    """Columns as numpy arrays (strings as str objects), names as in the table."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        cols = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    elif name.endswith(".csv"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # ids, paths and HDU names stay strings even where they look like numbers (id 00123 keeps its zeros)
        with path.open() as fh:
            head = [c.strip().strip('"') for c in fh.readline().split(",")]
        text = {c: pa.string() for c in head if c.lower() == "id" or c.lower().startswith(("path", "hdu"))}
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text))
        cols = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    else:
        from astropy.io import fits
        from astropy.table import Table

        with fits.open(path) as hdul:
            ext = next(i for i, h in enumerate(hdul) if i and not h.is_image)
        t = Table.read(path, format="fits", hdu=ext)
        cols = {c: np.asarray(t[c]) for c in t.colnames}
    out = {}
    for k, v in cols.items():
        if v.dtype.kind in ("S", "U", "O"):
            v = np.array([x.decode().strip() if isinstance(x, bytes) else ("" if x is None else str(x).strip())
                          for x in v], dtype=object)
        out[k] = v
    return out


@register("table", TABLE_SUFFIXES)
def _open(path: Path, spec: ReadSpec) -> Layout:
    return TableLayout(path, spec)


class TableLayout(Layout):
    format = "table"
    sized = True

    def __init__(self, path: Path, spec: ReadSpec):
        super().__init__(path, spec)
        raw = load_table(path)
        # structural columns (id, path, path_<band>, hdu_<band>, label) in any case; the rest keep their names
        self._t = {(k.lower() if k.lower() in _STRUCTURAL or k.lower().startswith(("path_", "hdu_")) else k): v
                   for k, v in raw.items()}
        if "id" not in self._t:
            raise InputError(f"{path}: an object table needs an 'id' column (found {', '.join(self._t) or 'none'})")
        self.n = len(self._t["id"])
        if self.n == 0:
            raise InputError(f"{path}: the object table has no rows")
        self._ids = [str(i) for i in self._t["id"]]
        per_band = tuple(k[5:] for k in self._t if k.startswith("path_"))
        if per_band:
            have = per_band
            if spec.bands:
                order = band_order(have, spec.bands, f"{path} (columns path_<band>)")
                per_band = tuple(have[i] for i in order)
            self._bands, self.band_names = per_band, spec.bands or per_band
        elif "path" in self._t:
            self._bands, self.band_names = None, spec.bands
        else:
            raise InputError(f"{path}: no 'path' column (one file per object) or 'path_<band>' columns (a file per "
                             "band); add them (docs/survey_data.md)")
        first, header = self._object(0)
        self._size = spec.size or tuple(int(x) for x in first.shape[-2:])
        self.shape = (int(first.shape[0]), *self._size)
        self.pixel_scale = fitsutil.pixel_scale(header)
        # without ra/dec columns, each object's WCS centre stands in (filled as rows are read)
        self._radec: dict[int, tuple[float, float]] | None = None
        if not {"ra", "dec"} & set(self._t) and fitsutil.centre_radec(header, *first.shape[-2:]) is not None:
            self._radec = {}
        if spec.size:  # refuse a size beyond crop/pad now, with the numbers, not at the first unit
            fit_size(first[None], spec.size, self._where(0))

    def _where(self, i: int) -> str:
        return f"{self.path} row {i} (id {self._ids[i]})"

    def _file(self, i: int, column: str, band: str | None) -> Path:
        v = self._t[column][i]
        if v is None or str(v).strip() in ("", "nan", "None", "--"):
            what = f"no {band} image ({column} is empty)" if band else f"no file ({column} is empty)"
            raise InputError(f"{self._where(i)}: {what}; add it or drop the object")
        p = Path(str(v).strip())
        return p if p.is_absolute() else self.path.parent / p

    def _object(self, i: int) -> tuple[np.ndarray, object]:
        """Row i's pixels [C, h, w] in the spec's band order, and a header with its WCS."""
        where = self._where(i)
        try:
            if self._bands is None:
                obj = fitsutil.read_object(self._file(i, "path", None), self.spec.bands, where)
                return obj.images.astype(np.float32, copy=False), obj.header
            planes, header = [], None
            for b in self._bands:
                hdu = self._t.get(f"hdu_{b}", [None] * self.n)[i]
                img, hdr = fitsutil.read_band_image(self._file(i, f"path_{b}", b), hdu, b, where)
                planes.append(img)
                header = header if header is not None else hdr
            shapes = {p.shape for p in planes}
            if len(shapes) > 1:
                raise InputError(f"{where}: bands have different sizes {sorted(shapes)}; cut every band on one grid")
            return np.stack(planes), header
        except InputError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"{where}: cannot read ({type(exc).__name__}: {exc}); re-download or fix the path") from exc

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        def one(i: int) -> tuple[np.ndarray, bool]:
            img, header = self._object(i)
            if self._radec is not None:
                self._radec[i] = fitsutil.centre_radec(header, *img.shape[-2:]) or (np.nan, np.nan)
            fitted, resized = fit_size(img[None], self._size, self._where(i))
            return fitted[0], resized

        if self._radec is not None:
            self._radec = {}  # only the rows of the last read: columns are asked for right after it
        rows = pmap(one, range(start, stop))
        flags = np.array([FLAG_RESIZED if r else 0 for _, r in rows], dtype=np.int32)
        return np.stack([img for img, _ in rows]).astype(np.float32, copy=False), flags

    def ids(self, start, stop):
        return self._ids[start:stop]

    def labels(self, start, stop):
        return np.asarray(self._t["label"][start:stop]).astype(np.int64) if "label" in self._t else None

    def column_names(self):
        own = tuple(k for k in self._t if k not in _STRUCTURAL and not k.startswith(("path_", "hdu_")))
        return own + (("ra", "dec") if self._radec is not None else ())

    def column(self, name, start, stop):
        if self._radec is not None and name in ("ra", "dec") and name not in self._t:
            j = ("ra", "dec").index(name)
            return np.array([self._radec[i][j] for i in range(start, stop)], dtype=np.float64)
        return self._t[name][start:stop]
