"""`lenstrt cutout`: stamps from two overlapping simulated tiles + a catalog are the very pixels placed
there, each object once, edge objects padded and flagged; serve scores them as it scores the HDF5 they came
from and carries ids and ra/dec; tiles whose bands disagree on the pixel grid are refused."""


import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from click.testing import CliRunner

from lenstrt.cli.main import cli
from lenstrt.data.cutout import CutoutSpec, cutout
from lenstrt.data.mock_tiles import mock_tiles
from lenstrt.data.readers import FLAG_EDGE, FLAG_NONFINITE
from lenstrt.errors import InputError
from lenstrt.serve.pipeline import ServeOptions, serve

N = 14
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def sky(sim_dir, tmp_path_factory):
    with h5py.File(sorted(sim_dir.glob("*.h5"))[0]) as f:
        images, ids = f["images"][:N], [i.decode() for i in f["ids"][:N]]
    d = tmp_path_factory.mktemp("sky")
    with h5py.File(d / "ref.h5", "w") as f:
        f["images"], f["ids"] = images, np.array([i.encode() for i in ids])
    info = mock_tiles(images, ids, ["g", "r", "i"], d, extra={"mag": np.arange(N, dtype=np.float32)})
    return {**info, "images": images, "ids": ids, "dir": d}


def _stamps(out):
    got = {}
    for p in sorted(out.glob("stamps-*.h5")):
        with h5py.File(p) as f:
            for k, i in enumerate(f["ids"][:]):
                assert i.decode() not in got, "an object cut twice"
                got[i.decode()] = (f["images"][k], int(f["flags"][k]), float(f["ra"][k]), float(f["mag"][k]))
    return got


def test_stamps_are_the_pixels_placed_once_each(sky, tmp_path):
    s = cutout(CutoutSpec(sky["tiles"], sky["catalog"], size=64, bands=("g", "r", "i"), shard_size=5), tmp_path,
               workers=2, **QUIET)
    assert (s["objects"], s["stamps"], s["outside"], s["edge_flagged"], s["tiles"]) == (N + 2, N + 1, 1, 1, 2)
    got = _stamps(tmp_path)
    assert sorted(got) == sorted(sky["ids"] + [sky["edge_id"]])
    for k, i in enumerate(sky["ids"]):
        np.testing.assert_array_equal(got[i][0], sky["images"][k])
        assert got[i][1] == 0 and got[i][3] == k
    edge, flags = got[sky["edge_id"]][:2]
    assert flags == FLAG_EDGE and np.isnan(edge[:, -10:]).all() and np.isfinite(edge[:, :40]).all()
    assert "far-away" in (tmp_path / "outside.csv").read_text()
    # rerun: nothing to do; other options: refused
    again = cutout(CutoutSpec(sky["tiles"], sky["catalog"], size=64, bands=("g", "r", "i"), shard_size=5), tmp_path,
                   **QUIET)
    assert again["stamps_this_run"] == 0
    with pytest.raises(InputError, match="other tiles, catalog or options"):
        cutout(CutoutSpec(sky["tiles"], sky["catalog"], size=48), tmp_path, **QUIET)


def test_serve_scores_stamps_as_the_original_cutouts(sky, bundle_dir, tmp_path):
    res = CliRunner().invoke(cli, ["cutout", "--tiles", sky["tiles"], "--catalog", sky["catalog"], "--out",
                                   str(tmp_path / "shards"), "-q"])
    assert res.exit_code == 0, res.output
    assert "1 at a tile edge" in res.output
    serve(bundle_dir, [str(tmp_path / "shards")], tmp_path / "a", ServeOptions(backend="ort"), **QUIET)
    serve(bundle_dir, [str(sky["dir"] / "ref.h5")], tmp_path / "b", ServeOptions(backend="ort"), **QUIET)

    def table(out):
        return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("*.parquet"))])

    a, b = table(tmp_path / "a"), table(tmp_path / "b")
    sa = dict(zip(a.column("id").to_pylist(), a.column("score").to_pylist()))
    sb = dict(zip(b.column("id").to_pylist(), b.column("score").to_pylist()))
    np.testing.assert_allclose([sa[i] for i in sky["ids"]], [sb[i] for i in sky["ids"]], atol=2e-5)
    cat = pq.read_table(sky["catalog"]).to_pydict()
    ra = dict(zip(cat["id"], cat["ra"]))
    assert {"ra", "dec"} <= set(a.column_names)
    for i, r in zip(a.column("id").to_pylist(), a.column("ra").to_pylist()):
        assert r == pytest.approx(ra[i], abs=1e-12)
    flags = dict(zip(a.column("id").to_pylist(), a.column("flags").to_pylist()))
    assert flags[sky["edge_id"]] == FLAG_EDGE | FLAG_NONFINITE and sum(flags.values()) == flags[sky["edge_id"]]


def test_tiles_off_grid_or_missing_a_band_are_refused(sky, tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for p in (sky["dir"] / "tiles").glob("*.fits"):
        (tiles / p.name).write_bytes(p.read_bytes())
    with fits.open(tiles / "B_r.fits", mode="update") as h:
        h[0].header["CRPIX1"] += 0.5
    with pytest.raises(InputError) as ei:
        cutout(CutoutSpec(str(tiles / "*_{band}.fits"), sky["catalog"]), tmp_path / "o", **QUIET)
    msg = str(ei.value)
    assert "B_r.fits" in msg and "B_g.fits" in msg and "one pixel grid" in msg and "\n" not in msg
    (tiles / "B_r.fits").unlink()
    with pytest.raises(InputError, match="B_r.fits: no such tile"):
        cutout(CutoutSpec(str(tiles / "*_{band}.fits"), sky["catalog"]), tmp_path / "o", **QUIET)
