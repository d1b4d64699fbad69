"""Survey layouts end to end: the same simulated pixels written as HSC-like per-band MEF files, per-object
MEF files with shuffled band HDUs, and Legacy-Surveys-like cubes with band keywords, listed by object
tables (CSV, Parquet, FITS), score exactly as the HDF5 they came from; ids, ra/dec and kept columns reach
the catalog and the candidates; sizes a few pixels off are cropped or padded; a pixel-scale mismatch and a
missing band are one-line errors."""

import json

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from lenstrt.data.readers import FLAG_NONFINITE, FLAG_RESIZED, MismatchError
from lenstrt.errors import InputError
from lenstrt.serve.pipeline import ServeOptions, serve

N = 12
BANDS = ("g", "r", "i")
QUIET = dict(progress=False, log=lambda *a: None)


def _wcs(ra, dec, size, scale=0.2):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]   # the centre, 1-based
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    w.wcs.crval = [ra, dec]
    return w.to_header()


def _catalog(out):
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("*.parquet"))])


def _scores(out):
    t = _catalog(out)
    return dict(zip(t.column("id").to_pylist(), t.column("score").to_pylist()))


@pytest.fixture(scope="module")
def objects(sim_dir, tmp_path_factory):
    """N simulated objects (g, r, i pixels), their ids and sky positions, and an HDF5 copy of them."""
    with h5py.File(sorted(sim_dir.glob("*.h5"))[0]) as f:
        images = f["images"][:N]
        ids = [i.decode() for i in f["ids"][:N]]
    d = tmp_path_factory.mktemp("objects")
    ra = 150.0 + 0.01 * np.arange(N)
    dec = 2.0 + 0.005 * np.arange(N)
    with h5py.File(d / "ref.h5", "w") as f:
        f["images"], f["ids"] = images, np.array([i.encode() for i in ids])
        f["ra"], f["dec"] = ra, dec
        f.attrs["bands"], f.attrs["pixel_scale"] = json.dumps(list(BANDS)), 0.2
    return {"images": images, "ids": ids, "ra": ra, "dec": dec, "dir": d}


@pytest.fixture(scope="module")
def reference(objects, bundle_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref_out")
    serve(bundle_dir, [str(objects["dir"] / "ref.h5")], out, ServeOptions(backend="ort"), **QUIET)
    return _scores(out), _catalog(out)


def _hsc_files(objects, d, scale=0.2, pad=0):
    """HSC cutout-service style: a file per object per band, PRIMARY (FILTER) + IMAGE + MASK + VARIANCE."""
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, oid in enumerate(objects["ids"]):
        row = {"id": oid, "ra": objects["ra"][k], "dec": objects["dec"][k], "mag": 20.0 + k}
        for b, band in enumerate(BANDS):
            img = objects["images"][k, b]
            if pad > 0:
                img = np.pad(img, pad, constant_values=0.0)
            elif pad < 0:
                img = img[-pad:pad, -pad:pad]
            hdr = _wcs(objects["ra"][k], objects["dec"][k], img.shape[0], scale)
            hdr["EXTNAME"] = "IMAGE"
            hdul = fits.HDUList([fits.PrimaryHDU(header=fits.Header([("FILTER", f"HSC-{band.upper()}")])),
                                 fits.ImageHDU(img, header=hdr),
                                 fits.ImageHDU(np.zeros(img.shape, np.int32), name="MASK"),
                                 fits.ImageHDU(np.ones(img.shape, np.float32), name="VARIANCE")])
            name = f"{oid}_{band}.fits"
            hdul.writeto(d / name, overwrite=True)
            row[f"path_{band}"] = name
        rows.append(row)
    return rows


def _mef_files(objects, d):
    """One file per object, an image HDU per band in shuffled order; band in EXTNAME, FILTER or BAND."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for k, oid in enumerate(objects["ids"]):
        hdus = [fits.PrimaryHDU()]
        for b in rng.permutation(3):
            band = BANDS[b]
            hdr = _wcs(objects["ra"][k], objects["dec"][k], 64)
            key = ("EXTNAME", "FILTER", "BAND")[b]
            hdr[key] = band
            hdus.append(fits.ImageHDU(objects["images"][k, b], header=hdr))
            hdus.append(fits.ImageHDU(np.ones((64, 64), np.float32), name=f"{band}_VARIANCE"))
        fits.HDUList(hdus).writeto(d / f"{oid}.fits", overwrite=True)
    return [{"id": oid, "path": f"{oid}.fits"} for oid in objects["ids"]]


def _cube_files(objects, d):
    """Legacy Surveys style: a (3, H, W) cube per object, planes in r, i, g order named by BAND0..BAND2."""
    d.mkdir(parents=True, exist_ok=True)
    order = [1, 2, 0]
    for k, oid in enumerate(objects["ids"]):
        hdr = _wcs(objects["ra"][k], objects["dec"][k], 64)
        for j, b in enumerate(order):
            hdr[f"BAND{j}"] = BANDS[b]
        fits.PrimaryHDU(objects["images"][k][order], header=hdr).writeto(d / f"{oid}.fits", overwrite=True)
    return [{"id": oid, "path": f"{oid}.fits"} for oid in objects["ids"]]


def _check_same(out, reference, objects, atol=2e-5):
    ref, _ = reference
    got = _scores(out)
    assert sorted(got) == sorted(ref)
    np.testing.assert_allclose([got[i] for i in objects["ids"]], [ref[i] for i in objects["ids"]], atol=atol)


def test_every_layout_scores_as_hdf5(objects, reference, bundle_dir, tmp_path):
    d = tmp_path / "in"  # tables beside the folders of files they list (paths relative to the table)
    rows = [{k: (f"hsc/{v}" if k.startswith("path_") else v) for k, v in r.items()} for r in _hsc_files(objects, d / "hsc")]
    cols = ["id", "path_i", "ra", "path_g", "dec", "mag", "path_r"]  # bands in no particular order
    Table(rows=[[r[c] for c in cols] for r in rows], names=cols).write(d / "hsc.csv")
    mef = [{"id": r["id"], "path": f"mef/{r['path']}"} for r in _mef_files(objects, d / "mef")]
    pq.write_table(pa.Table.from_pylist(mef), d / "mef.parquet")
    cube = _cube_files(objects, d / "cube")
    Table(rows=[[r["id"], f"cube/{r['path']}"] for r in cube], names=["id", "path"]).write(d / "cube.fits")
    for name in ("hsc.csv", "mef.parquet", "mef", "cube.fits", "cube"):
        out = tmp_path / f"out-{name}"
        serve(bundle_dir, [str(d / name)], out, ServeOptions(backend="ort", batch_size=5, unit_rows=8), **QUIET)
        _check_same(out, reference, objects)
        t = _catalog(out)
        if name != "cube.fits":  # that table has no ra/dec; the others carry them (table, or the WCS centre)
            ra = dict(zip(t.column("id").to_pylist(), t.column("ra").to_pylist()))
            np.testing.assert_allclose([ra[i] for i in objects["ids"]], objects["ra"], atol=1e-9)
        assert set(t.column("flags").to_pylist()) == {0}, name


def test_ids_positions_and_columns_reach_candidates(objects, reference, bundle_dir, tmp_path):
    d = objects["dir"] / "hsc2"
    rows = _hsc_files(objects, d)
    pq.write_table(pa.Table.from_pylist(rows), d / "objects.parquet")
    for fmt, suffix in (("fits", "fits"), ("votable", "vot"), ("csv", "csv")):
        out = tmp_path / fmt
        s = serve(bundle_dir, [str(d / "objects.parquet")], out,
                  ServeOptions(backend="ort", keep_columns=("ra", "dec", "mag"), candidates_format=fmt, top_k=5),
                  **QUIET)
        assert s["candidates"].endswith(f"candidates.{suffix}")
        t = _catalog(out)
        assert t.column_names[-3:] == ["ra", "dec", "mag"]
        c = Table.read(out / f"candidates.{suffix}")
        assert len(c) == 5 and {"id", "ra", "dec", "mag", "score"} <= set(c.colnames)
        k = objects["ids"].index(str(c["id"][0]))
        assert c["ra"][0] == pytest.approx(objects["ra"][k]) and c["mag"][0] == pytest.approx(20.0 + k)
        assert list(c["score"]) == sorted(c["score"], reverse=True)
    # HDF5 datasets of length N are columns too; ra/dec are carried by default
    t = reference[1]
    assert t.column_names[-2:] == ["ra", "dec"]
    with pytest.raises(MismatchError, match="no column nope to keep"):
        serve(bundle_dir, [str(d / "objects.parquet")], tmp_path / "x", ServeOptions(backend="ort", keep_columns=("nope",)),
              **QUIET)


def test_gallery_uses_user_ids(objects, bundle_dir, tmp_path):
    d = objects["dir"] / "mef_g"
    mef = _mef_files(objects, d)
    pq.write_table(pa.Table.from_pylist(mef), d / "objects.parquet")
    s = serve(bundle_dir, [str(d / "objects.parquet")], tmp_path, ServeOptions(backend="ort", gallery=True, top_k=4),
              **QUIET)
    assert (tmp_path / "candidates.png").stat().st_size > 0 and s["gallery"]


@pytest.mark.parametrize("pad,flags", [(1, FLAG_RESIZED), (-2, FLAG_RESIZED | FLAG_NONFINITE)])
def test_sizes_a_few_pixels_off_are_fitted_and_flagged(objects, reference, bundle_dir, tmp_path, pad, flags):
    rows = _hsc_files(objects, tmp_path / "files", pad=pad)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "files" / "objects.parquet")
    out = tmp_path / "out"
    serve(bundle_dir, [str(tmp_path / "files" / "objects.parquet")], out, ServeOptions(backend="ort"), **QUIET)
    t = _catalog(out)
    assert set(t.column("flags").to_pylist()) == {flags}
    if pad > 0:  # cropped back to the very same pixels
        _check_same(out, reference, objects)


def test_size_far_off_is_refused(objects, bundle_dir, tmp_path):
    rows = _hsc_files({**objects, "ids": objects["ids"][:1]}, tmp_path / "files", pad=10)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "files" / "objects.parquet")
    with pytest.raises(MismatchError) as ei:
        serve(bundle_dir, [str(tmp_path / "files" / "objects.parquet")], tmp_path / "out", ServeOptions(backend="ort"),
              **QUIET)
    msg = str(ei.value)
    assert "84x84" in msg and "64x64" in msg and objects["ids"][0] in msg and "\n" not in msg


def test_pixel_scale_mismatch_refused_unless_told(objects, reference, bundle_dir, tmp_path):
    rows = _hsc_files(objects, tmp_path / "files", scale=0.263)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "files" / "objects.parquet")
    inp = [str(tmp_path / "files" / "objects.parquet")]
    with pytest.raises(MismatchError) as ei:
        serve(bundle_dir, inp, tmp_path / "out", ServeOptions(backend="ort"), **QUIET)
    msg = str(ei.value)
    assert '0.263"/px' in msg and '0.2"/px' in msg and "--ignore-pixel-scale" in msg and "objects.parquet" in msg
    assert not list((tmp_path / "out" / "catalog").glob("*"))
    serve(bundle_dir, inp, tmp_path / "out2", ServeOptions(backend="ort", pixel_scale_tolerance=None), **QUIET)
    _check_same(tmp_path / "out2", reference, objects)


def test_missing_band_names_the_object_and_band(objects, bundle_dir, tmp_path):
    rows = _hsc_files(objects, tmp_path / "files")
    no_i = [{k: v for k, v in r.items() if k != "path_i"} for r in rows]
    pq.write_table(pa.Table.from_pylist(no_i), tmp_path / "files" / "no_i.parquet")
    with pytest.raises(MismatchError, match="no band 'i'"):
        serve(bundle_dir, [str(tmp_path / "files" / "no_i.parquet")], tmp_path / "a", ServeOptions(backend="ort"),
              **QUIET)
    rows[3]["path_i"] = ""  # one object lacks its i image: that object's unit is recorded, the rest scored
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "files" / "hole.parquet")
    s = serve(bundle_dir, [str(tmp_path / "files" / "hole.parquet")], tmp_path / "b",
              ServeOptions(backend="ort", unit_rows=4), **QUIET)
    err = json.loads((tmp_path / "b" / "errors.jsonl").read_text().splitlines()[0])
    assert f"id {objects['ids'][3]}" in err["error"] and "no i image" in err["error"]
    assert s["counts"]["catalog_rows"] == N - 4
    with pytest.raises(InputError, match=f"id {objects['ids'][3]}.*no i image"):
        serve(bundle_dir, [str(tmp_path / "files" / "hole.parquet")], tmp_path / "c",
              ServeOptions(backend="ort", unit_rows=4, strict=True), **QUIET)


def test_cli_options(objects, bundle_dir, tmp_path):
    from click.testing import CliRunner

    from lenstrt.cli.main import cli

    rows = _hsc_files(objects, tmp_path / "files", scale=0.263)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "files" / "objects.parquet")
    base = ["serve", "--bundle", str(bundle_dir), "--input", str(tmp_path / "files" / "objects.parquet"),
            "--backend", "ort", "-q"]
    res = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "a")])
    assert res.exit_code == 1 and '0.263"/px' in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "b"), "--ignore-pixel-scale", "--keep-columns",
                                          "mag,ra", "--candidates-format", "fits", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    c = Table.read(tmp_path / "b" / "candidates.fits")
    assert len(c) == 3 and c.colnames[-2:] == ["mag", "ra"] and "dec" not in c.colnames
