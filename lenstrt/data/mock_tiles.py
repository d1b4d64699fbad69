"""Survey tiles made of simulated cutouts, for tests, the demo and benchmarks of `lenstrt cutout`.

Stamps are laid on a grid of a sky image with a TAN WCS, which is split into two tiles that overlap by a
column of objects (one FITS per band per tile, every band on one pixel grid). A catalog lists each stamp's
centre (id, ra, dec, and the shard's labels/kind where present), plus one object half off the sky image
(an edge stamp) and one far outside it. Cutting a stamp back at its catalog position returns the same
pixels. `python -m lenstrt.data.mock_tiles --data SHARDS --out DIR [--n N]` writes DIR/tiles/ and
DIR/objects.parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GAP = 8  # px of empty sky between stamps


def sky_wcs(ny: int, nx: int, scale: float, ra0: float = 150.0, dec0: float = 2.0, x0: int = 0):
    """TAN WCS of the sky image (centre at ra0, dec0), or of its part starting at column x0."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(nx + 1) / 2 - x0, (ny + 1) / 2]
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    w.wcs.crval = [ra0, dec0]
    return w


def mock_tiles(images: np.ndarray, ids: list[str], bands: list[str], out: str | Path, scale: float = 0.2,
               extra: dict[str, np.ndarray] | None = None) -> dict:
    """Tiles `out`/tiles/{A,B}_<band>.fits and `out`/objects.parquet from cutouts [n, C, S, S]."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io import fits

    out = Path(out)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    n, c, size, _ = images.shape
    step = size + GAP
    ncols = max(3, int(np.ceil(np.sqrt(n))))
    nrows = int(np.ceil(n / ncols)) + 1  # a spare row: the edge object sits half above the top
    ny, nx = nrows * step + GAP, ncols * step + GAP
    sky = np.zeros((c, ny, nx), np.float32)
    w = sky_wcs(ny, nx, scale)
    xs, ys = [], []
    for k in range(n):
        x0, y0 = GAP + (k % ncols) * step, GAP + (k // ncols) * step
        sky[:, y0:y0 + size, x0:x0 + size] = images[k]
        xs.append(x0 + (size - 1) / 2)
        ys.append(y0 + (size - 1) / 2)
    # the edge object: its centre inside, the lower rows of its stamp beyond the top of the sky image
    vis = size // 2 + GAP
    sky[:, ny - vis:, GAP:GAP + size] = images[0][:, :vis]
    xs.append(GAP + (size - 1) / 2)
    ys.append(ny - vis + (size - 1) / 2)
    ra, dec = w.pixel_to_world_values(np.array(xs), np.array(ys))
    ra, dec = np.append(ra, ra[0] + 1.0), np.append(dec, dec[0])  # an object outside every tile
    # two tiles overlapping by a column of objects
    split = GAP + (ncols // 2) * step
    cuts = {"A": (0, split + step), "B": (split, nx)}
    for name, (a, b) in cuts.items():
        hdr = sky_wcs(ny, nx, scale, x0=a).to_header()
        for j, band in enumerate(bands):
            h = hdr.copy()
            h["FILTER"] = band
            fits.HDUList([fits.PrimaryHDU(sky[j, :, a:b], header=h),
                          fits.ImageHDU(np.zeros((ny, b - a), np.int16), name="MASK")]).writeto(
                out / "tiles" / f"{name}_{band}.fits", overwrite=True)
    all_ids = list(ids) + [f"{ids[0]}-edge", "far-away"]
    cols: dict[str, object] = {"id": all_ids, "ra": ra, "dec": dec}
    for k, v in (extra or {}).items():
        v = np.asarray(v)
        cols[k] = np.concatenate([v, v[:1], v[:1]])
    pq.write_table(pa.table(cols), out / "objects.parquet")
    return {"tiles": str(out / "tiles" / "*_{band}.fits"), "catalog": str(out / "objects.parquet"),
            "ids": all_ids, "edge_id": all_ids[-2], "outside_id": all_ids[-1], "overlap_px": (split, split + step)}


def main(argv: list[str] | None = None) -> None:
    import json

    import h5py

    p = argparse.ArgumentParser(prog="python -m lenstrt.data.mock_tiles", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="an HDF5 shard, or a directory of them (lenstrt simulate)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=None, help="objects to place [all in the first shard]")
    a = p.parse_args(argv)
    src = Path(a.data)
    shard = sorted(src.glob("*.h5"))[0] if src.is_dir() else src
    with h5py.File(shard) as f:
        n = a.n or len(f["images"])
        images = f["images"][:n]
        ids = [i.decode() for i in f["ids"][:n]]
        extra = {k: f[k][:n] for k in ("labels", "theta_e") if k in f}
        bands = json.loads(f.attrs["bands"])
        scale = float(f.attrs.get("pixel_scale", 0.2))
    info = mock_tiles(images, ids, bands, a.out, scale, extra)
    print(f"tiles: {info['tiles']}  catalog: {info['catalog']} ({len(info['ids'])} objects: {n} on the sky, one "
          "half off its edge, one outside it)")


if __name__ == "__main__":
    main()
