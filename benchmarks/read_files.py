"""Files/s reading per-object FITS cutouts through an object table (serve's reader), by thread count,
and stamps/s of `lenstrt cutout` from tiles.

    .venv/bin/python benchmarks/read_files.py [--objects 2000] [--threads 1,4,8,16] [--out /tmp/lenstrt_read_bench]

Writes HSC-like per-band files (PRIMARY + IMAGE + MASK + VARIANCE, 64x64, a file per object per band) and
one-file-per-object MEF files, then reads every object (batches of 128, as serve does) with
LENSTRT_READ_THREADS set to each count; then cuts the same number of stamps from two mock tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def make_files(d: Path, n: int, size: int = 64) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io import fits

    rng = np.random.default_rng(0)
    (d / "hsc").mkdir(parents=True, exist_ok=True)
    (d / "mef").mkdir(parents=True, exist_ok=True)
    hsc, mef = [], []
    for k in range(n):
        img = rng.normal(size=(3, size, size)).astype(np.float32)
        row = {"id": f"obj{k:07d}"}
        hdus = [fits.PrimaryHDU()]
        for b, band in enumerate("gri"):
            name = f"hsc/obj{k:07d}_{band}.fits"
            fits.HDUList([fits.PrimaryHDU(header=fits.Header([("FILTER", f"HSC-{band.upper()}")])),
                          fits.ImageHDU(img[b], name="IMAGE"), fits.ImageHDU(np.zeros((size, size), np.int32), name="MASK"),
                          fits.ImageHDU(np.ones((size, size), np.float32), name="VARIANCE")]).writeto(d / name, overwrite=True)
            row[f"path_{band}"] = name
            hdus.append(fits.ImageHDU(img[b], header=fits.Header([("FILTER", band)])))
        fits.HDUList(hdus).writeto(d / "mef" / f"obj{k:07d}.fits", overwrite=True)
        hsc.append(row)
        mef.append({"id": row["id"], "path": f"mef/obj{k:07d}.fits"})
    pq.write_table(pa.Table.from_pylist(hsc), d / "hsc.parquet")
    pq.write_table(pa.Table.from_pylist(mef), d / "mef.parquet")
    return d / "hsc.parquet", d / "mef.parquet"


def read_rate(table: Path, threads: int, files_per_object: int) -> dict:
    os.environ["LENSTRT_READ_THREADS"] = str(threads)
    import lenstrt.data.readers.pool as pool

    pool._pool = None  # a fresh pool of this size
    from lenstrt.data.readers import CutoutFile, ReadSpec

    t0 = time.perf_counter()
    with CutoutFile(table, ReadSpec(bands=("g", "r", "i"), size=(64, 64))) as f:
        for s in range(0, f.n, 128):
            f.read(s, min(f.n, s + 128))
        n = f.n
    dt = time.perf_counter() - t0
    return {"threads": threads, "objects_s": round(n / dt, 1), "files_s": round(n * files_per_object / dt, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--threads", default="1,4,8,16")
    p.add_argument("--out", default="/tmp/lenstrt_read_bench")
    a = p.parse_args()
    d = Path(a.out)
    if not (d / "mef.parquet").exists():
        make_files(d, a.objects)
    hsc, mef = d / "hsc.parquet", d / "mef.parquet"
    res: dict = {"objects": a.objects, "cpus": os.cpu_count(), "hsc_per_band": [], "mef_per_object": []}
    for t in (int(x) for x in a.threads.split(",")):
        res["hsc_per_band"].append(read_rate(hsc, t, 3))
        res["mef_per_object"].append(read_rate(mef, t, 1))
        print(json.dumps({"threads": t, "hsc": res["hsc_per_band"][-1], "mef": res["mef_per_object"][-1]}))
    # cutout: the same number of stamps from two mock tiles
    from lenstrt.data.cutout import CutoutSpec, cutout
    from lenstrt.data.mock_tiles import mock_tiles

    rng = np.random.default_rng(1)
    images = rng.normal(size=(a.objects, 3, 64, 64)).astype(np.float32)
    info = mock_tiles(images, [f"t{k}" for k in range(a.objects)], ["g", "r", "i"], d / "tiles")
    for workers in (1, 2):
        s = cutout(CutoutSpec(info["tiles"], info["catalog"], shard_size=1000), d / f"stamps{workers}", workers=workers,
                   resume=False, progress=False, log=lambda *x: None)
        res[f"cutout_stamps_s_workers{workers}"] = s["stamps_per_s"]
        print(json.dumps({"cutout_workers": workers, "stamps_s": s["stamps_per_s"]}))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
