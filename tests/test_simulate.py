import json

import h5py
import numpy as np
import torch

from lenstrt.data.simulate import SimSpec, simulate, simulate_arrays
from lenstrt.data.simulate import caustics_adapter as ca
from lenstrt.data.simulate import photometry as ph
from lenstrt.data.simulate.population import KINDS
from lenstrt.data.simulate.presets import load_survey
from lenstrt.io import sha256_file


def test_shards_have_schema_and_attributes(sim_dir):
    meta = json.loads((sim_dir / "dataset.json").read_text())
    assert meta["n"] == 96 and meta["shards"] == ["shard-00000.h5", "shard-00001.h5"]
    with h5py.File(sim_dir / "shard-00001.h5") as f:
        assert f["images"].shape == (48, 3, 64, 64) and f["images"].dtype == np.float32
        assert json.loads(f.attrs["bands"]) == ["g", "r", "i"]
        assert f.attrs["pixel_scale"] == 0.2 and f.attrs["seed"] == 7 and "e-" in f.attrs["units"]
        assert f["ids"][0].decode() == "lsst-gri-s7-000000048"
        kinds = set(np.asarray(f["kind"]).astype(str))
        assert kinds <= set(KINDS)
        labels = f["labels"][:]
        assert set(np.asarray(f["kind"])[labels == 1].astype(str)) == {"lens"}
        theta, snr = f["theta_e"][:][labels == 1], f["arc_snr"][:][labels == 1]
        # the fixture's frozen population (conftest.sim_dir); today's default is the next test's
        assert np.all((theta >= 0.8) & (theta <= 2.2)) and np.all((snr >= 60 * 0.99) & (snr <= 2000 * 1.01))


def test_default_preset_draws_the_survey_radii_and_edge_on_discs():
    a = simulate_arrays(load_survey("lsst-gri"), 200, np.random.default_rng(4), lens_fraction=0.5)
    lens = a["labels"] == 1
    theta, snr = a["theta_e"][lens], a["arc_snr"][lens]
    assert np.all((theta >= 0.5) & (theta <= 3.5)) and np.all((snr >= 30 * 0.99) & (snr <= 2000 * 1.01))
    assert theta.min() < 0.8 and theta.max() > 2.2  # the survey's radii, not the 0.8-2.2" of before
    assert snr.min() < 60  # arcs from S/N 30, not the 60 of before
    assert set(a["kind"].astype(str)) == {"lens", "galaxy", "companion", "edgeon"}


def test_same_seed_same_bytes_and_resume(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    simulate(SimSpec(n=40, seed=3, shard_size=20), a, progress=False)
    simulate(SimSpec(n=40, seed=3, shard_size=20), b, progress=False)
    for name in ("shard-00000.h5", "shard-00001.h5"):
        assert sha256_file(a / name) == sha256_file(b / name)
    # a complete shard is kept on rerun; a missing one is re-made identically
    digest = sha256_file(a / "shard-00001.h5")
    (a / "shard-00001.h5").unlink()
    simulate(SimSpec(n=40, seed=3, shard_size=20), a, progress=False)
    assert sha256_file(a / "shard-00001.h5") == digest
    c = tmp_path / "c"
    simulate(SimSpec(n=20, seed=4, shard_size=20), c, progress=False)
    assert sha256_file(c / "shard-00000.h5") != sha256_file(a / "shard-00000.h5")


def test_sersic_total_flux_matches_numerical_integral():
    n, q, re = torch.tensor([1.0, 4.0]), torch.tensor([0.7, 0.5]), torch.tensor([0.3, 0.4])
    c = (torch.arange(3000, dtype=torch.float64) - 1499.5) * 0.004
    y, x = torch.meshgrid(c, c, indexing="ij")
    prof = ca.sersic(x[None].float(), y[None].float(), torch.zeros(2, 1, 1), torch.zeros(2, 1, 1),
                     q[:, None, None], torch.zeros(2, 1, 1), n[:, None, None], re[:, None, None])
    numeric = prof.double().sum(dim=(1, 2)) * 0.004**2
    analytic = ca.sersic_total_flux_per_ie(q, n, re).double()
    # n=4 has wide wings beyond the 6" box; n=1 must agree closely
    assert abs(numeric[0] / analytic[0] - 1) < 0.01
    assert 0.85 < numeric[1] / analytic[1] <= 1.0


def test_photometry_is_physical():
    survey = load_survey("lsst-gri")
    rng = np.random.default_rng(1)
    arrays = simulate_arrays(survey, 256, rng, lens_fraction=0.5, companion_fraction=0.0, simple=True)
    img, labels = arrays["images"], arrays["labels"]
    # lens galaxy flux in the image ~ its magnitude (PSF conserves flux; a little falls off the cutout)
    gal = labels == 0
    measured = img[gal, 2].sum(axis=(1, 2))
    expected = ph.mag_to_counts(arrays["lens_mags"][gal, 2], survey.bands[2])
    ratio = measured / expected
    assert 0.8 < np.median(ratio) < 1.05
    # colours: lens galaxies are red (more i than g flux), lensed sources blue relative to them
    assert np.median(arrays["lens_mags"][:, 0] - arrays["lens_mags"][:, 2]) > 1.0
    lens = labels == 1
    src_gi = arrays["source_mags"][lens, 0] - arrays["source_mags"][lens, 2]
    assert np.median(src_gi) < 0.5
    # (the noise level itself: test_simulate_population.py::test_seeing_sky_and_depth_vary_per_cutout_and_band)
    # lenses with bright arcs carry extra flux around the Einstein radius relative to plain galaxies: per lens, the g-band
    # surface brightness in rings at r / theta_E (normalised by the lens galaxy's own flux) minus the median of
    # the plain galaxies' in the same rings
    assert np.all(arrays["theta_e"][lens] > 0) and np.all(arrays["theta_e"][~lens] == 0)
    c = (np.arange(img.shape[-1]) - (img.shape[-1] - 1) / 2) * survey.pixel_scale
    r = np.hypot(*np.meshgrid(c, c, indexing="ij"))
    g = img[:, 0] / ph.mag_to_counts(arrays["lens_mags"][:, 0], survey.bands[0])[:, None, None]
    rings = [(0.75, 1.25), (2.0, 2.5)]  # around theta_E, and well outside it

    def profile(rows, theta_e):
        return np.stack([g[rows][:, (r >= lo * theta_e) & (r < hi * theta_e)].mean(1) for lo, hi in rings], 1)

    lens_idx, gal_idx = np.flatnonzero(lens & (arrays["arc_snr"] > 100)), np.flatnonzero(gal)  # clearly visible arcs
    assert len(lens_idx) > 30
    excess = np.array([profile([i], arrays["theta_e"][i])[0] - np.median(profile(gal_idx, arrays["theta_e"][i]), 0)
                       for i in lens_idx])
    assert (excess[:, 0] > 0).mean() > 0.75  # most are brighter at theta_E (galaxy sizes vary with theta_E too)
    assert np.median(excess[:, 0]) > 10 * abs(np.median(excess[:, 1]))  # and the extra light is there, not beyond
    # the same comparison between plain galaxies finds nothing: half above the median, half below
    control = np.array([profile([j], arrays["theta_e"][k])[0, 0] - np.median(profile(np.delete(gal_idx, n),
                        arrays["theta_e"][k])[:, 0]) for n, (j, k) in enumerate(zip(gal_idx, lens_idx))])
    assert 0.3 < (control > 0).mean() < 0.7


def test_euclid_single_band():
    survey = load_survey("euclid-vis")
    arrays = simulate_arrays(survey, 32, np.random.default_rng(0))
    assert arrays["images"].shape == (32, 1, 64, 64) and arrays["psf_fwhm"].shape == (32, 1)
    masked = (arrays["artefacts"] & 4) > 0
    assert np.isfinite(arrays["images"][~masked]).all()
