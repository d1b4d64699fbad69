"""`lenstrt cutout`: stamps around catalog positions from survey tiles (one large FITS per band with a WCS),
written as lenstrt HDF5 shards that serve reads like any other.

Positions go through astropy's WCS and stamps through `Cutout2D`; every band of a tile must share one pixel
grid (the same WCS and shape), so one pixel position cuts every band. An object inside several overlapping
tiles is cut once, from the tile where it lies furthest from an edge; a stamp that crosses a tile edge is
padded with NaN and flagged (FLAG_EDGE; serve fills the NaNs and flags them too). Work units are (tile,
chunk of its objects) -> one shard, written atomically: a rerun skips finished shards.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lenstrt.errors import InputError

FLAG_EDGE = 4  # = lenstrt.data.readers.FLAG_EDGE (not imported: worker processes stay light)
PLAN = "cutout.json"


@dataclass(frozen=True)
class CutoutSpec:
    tiles: str                               # glob with {band}: 'tiles/*_{band}.fits'
    catalog: str                             # object table: id, ra, dec (+ columns carried into the shards)
    size: int = 64
    bands: tuple[str, ...] | None = None     # None: every band the pattern finds, sorted
    shard_size: int = 10_000                 # stamps per shard at most (a tile's objects are split into chunks)
    columns: tuple[str, ...] | None = None   # catalog columns to carry; None = all


@dataclass(frozen=True)
class Tile:
    key: str                  # the pattern with the tile's name filled in and {band} left
    files: dict[str, str]     # band -> path
    shape: tuple[int, int]    # ny, nx


def _band_regex(pattern: str) -> re.Pattern:
    parts = pattern.split("{band}")
    if len(parts) != 2:
        raise InputError(f"--tiles {pattern}: needs exactly one {{band}} placeholder, e.g. 'tiles/*_{{band}}.fits'")

    def glob_re(s: str) -> str:
        return re.escape(s).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")

    return re.compile(glob_re(parts[0]) + r"(?P<band>[^/]+?)" + glob_re(parts[1]) + "$")


def find_tiles(pattern: str, bands: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[Tile]]:
    """Tiles grouped across bands by the rest of their name; a tile missing a band is an error."""
    rx = _band_regex(pattern)
    found: dict[str, dict[str, str]] = {}
    for path in sorted(glob.glob(pattern.replace("{band}", "*"), recursive=True)):
        m = rx.match(path)
        if not m or not Path(path).is_file():
            continue
        key = path[:m.start("band")] + "{band}" + path[m.end("band"):]
        found.setdefault(key, {})[m.group("band")] = path
    if not found:
        raise InputError(f"--tiles {pattern}: matches no files; check the pattern (the band goes where {{band}} is)")
    all_bands = tuple(sorted({b for f in found.values() for b in f}))
    bands = tuple(bands) if bands else all_bands
    tiles = []
    for key, files in sorted(found.items()):
        missing = [b for b in bands if b not in files]
        if missing:
            raise InputError(f"{key.replace('{band}', missing[0])}: no such tile (tile {key} has bands "
                             f"{', '.join(sorted(files))}); add it, or choose --bands among those")
        tiles.append(Tile(key, {b: files[b] for b in bands}, _check_grid(key, {b: files[b] for b in bands})))
    return bands, tiles


def _image_hdu(hdul, path: str):
    from lenstrt.data.readers.fitsutil import image_hdus

    idx = image_hdus(hdul, 2)
    if not idx:
        raise InputError(f"{path}: no 2-D image HDU; a tile is one image (plus MASK / WEIGHT planes) per band")
    return hdul[idx[0]]


def _check_grid(key: str, files: dict[str, str]) -> tuple[int, int]:
    """Every band's WCS and shape equal to the first band's (pixel-scale matrix, CRPIX, CRVAL, projection)."""
    from astropy.io import fits

    from lenstrt.data.readers.fitsutil import celestial_wcs

    ref = None
    for path in files.values():
        with fits.open(path, memmap=True) as hdul:
            hdu = _image_hdu(hdul, path)
            shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
            w = celestial_wcs(hdu.header)
        if w is None:
            raise InputError(f"{path}: no celestial WCS in the image header; tiles need one to place the catalog")
        desc = (shape, tuple(w.wcs.ctype), w.wcs.crpix, w.wcs.crval, w.pixel_scale_matrix)
        if ref is None:
            ref = (path, desc)
            continue
        r = ref[1]
        same = (desc[0] == r[0] and desc[1] == r[1] and np.allclose(desc[2], r[2], atol=1e-3)
                and np.allclose(desc[3], r[3], rtol=0, atol=1e-7)
                and np.allclose(desc[4], r[4], rtol=1e-6, atol=0))
        if not same:
            raise InputError(f"{path}: its WCS or size differs from {ref[0]} (CRPIX {list(desc[2])} vs {list(r[2])}, "
                             f"CRVAL {list(desc[3])} vs {list(r[3])}, shape {desc[0]} vs {r[0]}); every band of a tile must "
                             "be on one pixel grid: resample the bands onto one (e.g. SWarp or reproject)")
    assert ref is not None
    return ref[1][0]


def load_catalog(path: str | Path, columns: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    from lenstrt.data.readers.table import load_table

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such catalog file")
    t = load_table(path)
    low = {k.lower(): k for k in t}
    missing = [c for c in ("id", "ra", "dec") if c not in low]
    if missing:
        raise InputError(f"{path}: the catalog needs columns id, ra, dec (degrees); missing {', '.join(missing)}")
    ids = np.array([str(i) for i in t[low["id"]]], dtype=object)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if (ids == i).sum() > 1)
        raise InputError(f"{path}: id {dup} appears more than once; ids name the candidates, make them unique")
    out = {"id": ids, "ra": np.asarray(t[low["ra"]], np.float64), "dec": np.asarray(t[low["dec"]], np.float64)}
    rest = [k for k in t if k.lower() not in ("id", "ra", "dec")]
    if columns is not None:
        bad = [c for c in columns if c not in t]
        if bad:
            raise InputError(f"{path}: no column {', '.join(bad)} (columns: {', '.join(t)}); fix --columns")
        rest = list(columns)
    for k in rest:
        out[k] = t[k]
    return out


def assign(cat: dict[str, np.ndarray], tiles: list[Tile], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each object: the tile that holds it furthest from an edge (-1: none), and its pixel x, y there."""
    from astropy.io import fits

    from lenstrt.data.readers.fitsutil import celestial_wcs

    n = len(cat["id"])
    best, margin = np.full(n, -1), np.full(n, -np.inf)
    xs, ys = np.full(n, np.nan), np.full(n, np.nan)
    for t_i, tile in enumerate(tiles):
        path = next(iter(tile.files.values()))
        with fits.open(path, memmap=True) as hdul:
            w = celestial_wcs(_image_hdu(hdul, path).header)
        x, y = w.world_to_pixel_values(cat["ra"], cat["dec"])
        ny, nx = tile.shape
        m = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        m = np.where(np.isfinite(m), m, -np.inf)
        take = (m > 0) & (m > margin)  # ties keep the earlier tile: deterministic
        best[take], margin[take], xs[take], ys[take] = t_i, m[take], x[take], y[take]
    return best, xs, ys


def cut_unit(tile: Tile, bands: tuple[str, ...], rows: np.ndarray, xs: np.ndarray, ys: np.ndarray,
             size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stamps [n, C, size, size] (float32, NaN beyond the tile) and flags for objects at pixel (x, y)."""
    from astropy.io import fits
    from astropy.nddata import Cutout2D

    images = np.empty((len(rows), len(bands), size, size), np.float32)
    flags = np.zeros(len(rows), np.int32)
    for c, band in enumerate(bands):
        with fits.open(tile.files[band], memmap=True) as hdul:
            data = _image_hdu(hdul, tile.files[band]).data
            for k, (x, y) in enumerate(zip(xs, ys)):
                cut = Cutout2D(data, (x, y), (size, size), mode="partial", fill_value=np.nan, copy=True)
                images[k, c] = cut.data
                sy, sx = cut.slices_cutout
                if sy.stop - sy.start < size or sx.stop - sx.start < size:
                    flags[k] |= FLAG_EDGE
    return images, flags


def _write_unit(args) -> int:
    from lenstrt.data.readers.fitsutil import pixel_scale
    from lenstrt.data.shards import write_shard

    path, tile, bands, cols, xs, ys, size = args
    images, flags = cut_unit(tile, bands, np.arange(len(xs)), xs, ys, size)
    arrays: dict[str, np.ndarray] = {"images": images, "flags": flags}
    for k, v in cols.items():
        v = np.asarray(v)
        arrays["ids" if k == "id" else k] = v.astype("S") if v.dtype.kind in ("U", "O") else v
    from astropy.io import fits

    with fits.open(tile.files[bands[0]], memmap=True) as hdul:
        scale = pixel_scale(_image_hdu(hdul, tile.files[bands[0]]).header)
    write_shard(path, arrays, {"bands": json.dumps(list(bands)), "pixel_scale": scale or 0.0,
                               "source": "lenstrt cutout", "tiles": json.dumps(tile.files)})
    return len(xs)


def cutout(spec: CutoutSpec, out: str | Path, workers: int = 1, resume: bool = True, progress: bool = True,
           log: Callable[[str], None] = print) -> dict:
    """Cuts every catalog object found in the tiles into `out`/stamps-TTTTT-KKK.h5; returns a summary."""
    import time

    from lenstrt.io import write_json
    from lenstrt.progress import progress_bar

    t0 = time.perf_counter()
    out = Path(out)
    bands, tiles = find_tiles(spec.tiles, spec.bands)
    cat = load_catalog(spec.catalog, spec.columns)
    best, xs, ys = assign(cat, tiles, spec.size)
    plan = {"spec": asdict(spec), "bands": list(bands), "tiles": [t.files for t in tiles],
            "objects": int(len(best)), "assigned": [int((best == i).sum()) for i in range(len(tiles))]}
    out.mkdir(parents=True, exist_ok=True)
    prev = out / PLAN
    if prev.exists() and resume:
        old = json.loads(prev.read_text())
        if old != json.loads(json.dumps(plan)):
            raise InputError(f"{out}: holds stamps cut with other tiles, catalog or options; use another --out or "
                             "--no-resume to start over")
    elif not resume:
        for f in out.glob("stamps-*.h5"):
            f.unlink()
    write_json(prev, plan)
    units = []
    for t_i, tile in enumerate(tiles):
        rows = np.flatnonzero(best == t_i)
        for k, s in enumerate(range(0, len(rows), spec.shard_size)):
            r = rows[s:s + spec.shard_size]
            units.append((out / f"stamps-{t_i:05d}-{k:03d}.h5", tile, bands, {c: v[r] for c, v in cat.items()},
                          xs[r], ys[r], spec.size))
    todo = [u for u in units if not u[0].exists()]
    outside = np.flatnonzero(best < 0)
    if len(outside):
        with open(out / "outside.csv", "w") as fh:
            fh.write("id,ra,dec\n" + "".join(f"{cat['id'][i]},{cat['ra'][i]},{cat['dec'][i]}\n" for i in outside))
    log(f"{len(best) - len(outside):,} of {len(best):,} objects in {len(tiles)} tile(s) x {len(bands)} band(s) "
        f"({', '.join(bands)}); {len(units) - len(todo)} of {len(units)} shards already done"
        + (f"; {len(outside):,} outside every tile (listed in {out}/outside.csv)" if len(outside) else ""))
    t_cut = time.perf_counter()
    done = 0
    with progress_bar("cutout", total=sum(len(u[4]) for u in todo), unit="stamps", enabled=progress) as bar:
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                for n in pool.map(_write_unit, todo):
                    done += n
                    bar.advance(n)
        else:
            for u in todo:
                n = _write_unit(u)
                done += n
                bar.advance(n)
    cut_s = time.perf_counter() - t_cut
    edge = 0
    for u in units:
        import h5py

        with h5py.File(u[0], "r") as f:
            edge += int(np.count_nonzero(np.asarray(f["flags"]) & FLAG_EDGE))
    summary = {"objects": int(len(best)), "stamps": int(len(best) - len(outside)), "outside": int(len(outside)),
               "edge_flagged": edge, "tiles": len(tiles), "bands": list(bands), "shards": len(units),
               "stamps_this_run": done, "cut_s": round(cut_s, 2),
               "stamps_per_s": round(done / cut_s, 1) if done and cut_s > 0 else None,
               "wall_s": round(time.perf_counter() - t0, 2)}
    write_json(out / "summary.json", summary)
    return summary
