import gzip

import h5py
import numpy as np
import pytest
from astropy.io import fits

from lenstrt.data.readers import FLAG_NONFINITE, expand_paths, inspect, iter_batches, load_all
from lenstrt.errors import InputError


@pytest.fixture()
def cube(rng):
    return rng.normal(size=(10, 3, 16, 16)).astype(np.float32)


def test_reads_every_format_in_batches(tmp_path, cube):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["images"] = cube
        f["ids"] = np.array([f"obj{i}".encode() for i in range(10)])
        f["labels"] = np.arange(10) % 2
    np.save(tmp_path / "b.npy", cube)
    np.savez(tmp_path / "c.npz", images=cube, labels=np.zeros(10, int))
    fits.PrimaryHDU(cube).writeto(tmp_path / "d.fits")
    info = inspect(tmp_path)
    assert info.n == 40 and info.shape == (3, 16, 16)
    assert [f.format for f in info.files] == ["hdf5", "npy", "npz", "fits"]
    batches = list(iter_batches(tmp_path, 4))
    assert sum(len(b) for b in batches) == 40
    assert all(len({b.source}) == 1 for b in batches)  # a batch never spans files
    first = batches[0]
    assert first.ids[:2] == ["obj0", "obj1"] and list(first.labels) == [0, 1, 0, 1]
    np.testing.assert_array_equal(first.images, cube[:4])
    npy = [b for b in batches if b.source.endswith("b.npy")]
    assert npy[0].ids[0] == "b.npy:0" and npy[-1].index[-1] == 9
    np.testing.assert_array_equal(np.concatenate([b.images for b in npy]), cube)
    fits_rows = np.concatenate([b.images for b in batches if b.source.endswith(".fits")])
    np.testing.assert_array_equal(fits_rows, cube)


def test_nonfinite_pixels_filled_and_flagged(tmp_path, cube):
    cube = cube.copy()
    cube[2, 1, 3, 3] = np.nan
    cube[5, 0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", cube)
    (b,) = list(iter_batches(tmp_path / "x.npy", 100))
    assert np.isfinite(b.images).all()
    assert list(np.flatnonzero(b.flags & FLAG_NONFINITE)) == [2, 5]
    assert b.images[2, 1, 3, 3] == pytest.approx(np.median(np.delete(cube[2, 1].ravel(), 3 * 16 + 3)))


def test_load_all_with_extras(sim_dir):
    d = load_all(sim_dir, extra=("theta_e", "kind"))
    assert d["images"].shape == (96, 3, 64, 64) and d["labels"].shape == (96,)
    assert "theta_e" in d and d["kind"].shape == (96,)


@pytest.mark.parametrize("case", ["rank", "empty", "truncated_h5", "corrupt_fits", "missing", "no_images",
                                  "band_mismatch", "suffix", "empty_dir"])
def test_bad_input_names_the_file(tmp_path, cube, case):
    p = tmp_path / "bad.h5"
    if case == "rank":
        p = tmp_path / "bad.npy"
        np.save(p, cube[0])
    elif case == "empty":
        p = tmp_path / "bad.npy"
        np.save(p, cube[:0])
    elif case == "truncated_h5":
        with h5py.File(tmp_path / "ok.h5", "w") as f:
            f["images"] = np.zeros((200, 3, 32, 32), np.float32)
        data = (tmp_path / "ok.h5").read_bytes()
        (tmp_path / "ok.h5").unlink()
        p.write_bytes(data[: len(data) // 2])
    elif case == "corrupt_fits":
        p = tmp_path / "bad.fits"
        p.write_bytes(gzip.compress(b"not a fits file at all" * 100))
    elif case == "missing":
        p = tmp_path / "nope.h5"
    elif case == "no_images":
        with h5py.File(p, "w") as f:
            f["pixels"] = cube
    elif case == "band_mismatch":
        np.save(tmp_path / "a.npy", cube)
        np.save(tmp_path / "b.npy", cube[:, :1])
        p = tmp_path
    elif case == "suffix":
        p = tmp_path / "bad.txt"
        p.write_text("hi")
    elif case == "empty_dir":
        p = tmp_path / "empty"
        p.mkdir()
    with pytest.raises(InputError) as ei:
        inspect(p)
        list(iter_batches(p, 4))
    msg = str(ei.value)
    assert "\n" not in msg
    assert p.name in msg or "b.npy" in msg, msg


def test_glob(tmp_path, cube):
    for i in range(3):
        np.save(tmp_path / f"part{i}.npy", cube)
    assert len(expand_paths(str(tmp_path / "part*.npy"))) == 3
    with pytest.raises(InputError):
        expand_paths(str(tmp_path / "zzz*.npy"))


def test_band_names_match_survey_spellings():
    from lenstrt.data.readers.base import band_matches, band_order

    assert band_matches("HSC-G", "g") and band_matches("g DECam SDSS c0001 4720.0 1520.0", "g")
    assert band_matches("HSC-I2", "i") and band_matches("EUC_VIS", "VIS") and not band_matches("HSC-R", "g")
    assert band_order(("i", "g", "r"), ("g", "r", "i"), "x") == [1, 2, 0]
    with pytest.raises(InputError, match="x: no band 'z'"):
        band_order(("g", "r"), ("g", "z"), "x")


def test_fit_size_crops_and_pads_a_few_pixels(cube):
    from lenstrt.data.readers import fit_size

    out, changed = fit_size(cube, (12, 12), "f")
    assert changed and out.shape == (10, 3, 12, 12)
    np.testing.assert_array_equal(out, cube[..., 2:14, 2:14])
    out, _ = fit_size(cube[..., 1:15, 1:15], (16, 16), "f")
    assert np.isnan(out[..., 0, :]).all() and np.array_equal(out[..., 1:15, 1:15], cube[..., 1:15, 1:15])
    with pytest.raises(InputError, match="16x16 px, the bundle expects 64x64"):
        fit_size(cube, (64, 64), "f")


def test_mef_picks_image_hdus_and_orders_bands(tmp_path, cube):
    from lenstrt.data.readers import ReadSpec

    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.zeros((16, 16), np.int32), name="MASK")]
    for b, band in ((2, "i"), (0, "g"), (1, "r")):
        hdus += [fits.ImageHDU(cube[0, b], header=fits.Header([("FILTER", band)]), name=f"IMAGE_{band}"),
                 fits.ImageHDU(np.ones((16, 16), np.float32), name=f"VARIANCE_{band}")]
    fits.HDUList(hdus).writeto(tmp_path / "obj7.fits")
    (b,) = list(iter_batches(tmp_path / "obj7.fits", 4, ReadSpec(bands=("g", "r", "i"))))
    assert b.ids == ["obj7"] and b.images.shape == (1, 3, 16, 16)
    np.testing.assert_array_equal(b.images[0], cube[0])
    with pytest.raises(InputError, match="no band 'z'"):
        inspect(tmp_path / "obj7.fits", ReadSpec(bands=("g", "r", "z")))
