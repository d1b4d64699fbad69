"""The survey population, nuisances and negatives of `lenstrt simulate` (docs/simulation.md): the arc S/N
by hand, PSFs measured, every kind present and labelled, artefacts where the flags say."""

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lenstrt.data.simulate import ARTEFACTS, negative_mix, profiles, simulate_arrays
from lenstrt.data.simulate import photometry as ph
from lenstrt.data.simulate import psf as psfmod
from lenstrt.data.simulate.population import KINDS, LENS, NEGATIVES, Stars, max_galaxy_re, sample
from lenstrt.data.simulate.presets import load_survey
from lenstrt.data.simulate.render import render
from lenstrt.errors import ConfigError


@pytest.fixture(scope="module")
def survey():
    return load_survey("lsst-gri-survey")


@pytest.fixture(scope="module")
def arrays(survey):
    return simulate_arrays(survey, 768, np.random.default_rng(3), lens_fraction=0.4)


def test_arc_snr_by_hand():
    # one cutout, two bands, 1x3 pixels; background variance 4 (sigma 2) in both bands
    arc = torch.tensor([[[[1.0, 3.0, 5.0]], [[2.5, 0.0, 2.0]]]])
    base = torch.tensor([[[[2.0, 1.0, 0.0]], [[0.0, 0.0, 0.0]]]])
    bg = torch.tensor([[4.0, 4.0]])
    # band 0: pixels 3 and 5 exceed sigma 2: flux 8, variance (1+3+4) + (0+5+4) = 17 -> 8/sqrt(17)
    # band 1: only 2.5 exceeds 2 (2.0 does not): 2.5 / sqrt(2.5 + 4)
    expected = np.sqrt(8**2 / 17 + 2.5**2 / 6.5)
    assert ph.arc_snr(arc, base, bg).item() == pytest.approx(expected, rel=1e-6)
    assert ph.arc_snr(torch.zeros_like(arc), base, bg).item() == 0.0  # no arc pixel above the noise


def test_arcs_are_scaled_to_the_drawn_snr(survey):
    rng = np.random.default_rng(0)
    scene = sample(survey, np.full(48, LENS), rng)
    r = render(scene, survey, rng)
    assert np.allclose(r.arc_snr, scene.target_snr, rtol=0.02)
    lo, hi = survey.population.arc_snr
    assert scene.target_snr.min() >= lo and scene.target_snr.max() <= hi
    # fainter arcs come from fainter sources: magnitude follows S/N, not a fixed window
    order = np.argsort(scene.target_snr)
    ref = survey.band_names.index(survey.reference_band)
    assert np.nanmedian(r.src_mags[order[:16], ref]) > np.nanmedian(r.src_mags[order[-16:], ref]) + 1.0


def test_kept_arc_is_the_lensed_source_alone(survey):
    """render(keep_model=True) also keeps the noise-free arc (benchmarks/stratum_gap.py reads it): the arc S/N
    recomputed from it and the rest of the model is the one written, and non-lenses have none."""
    rng = np.random.default_rng(4)
    gal, comp = KINDS.index("galaxy"), KINDS.index("companion")
    kinds = np.array([gal, LENS, LENS, comp, LENS, LENS, gal, LENS])  # lenses among the others: rows are kept apart
    lens = kinds == LENS
    scene = sample(survey, kinds, rng)
    r = render(scene, survey, rng, keep_model=True)
    assert r.arc is not None and r.model is not None and r.arc.shape == r.model.shape
    assert (r.arc[~lens] == 0).all() and (r.arc[lens].sum(axis=(1, 2, 3)) > 0).all()
    assert render(scene, survey, np.random.default_rng(0)).arc is None  # only when the model is kept
    bg = torch.as_tensor(ph.background(survey, scene.obs.sky_scale, scene.obs.depth)[lens], dtype=torch.float32)
    arc = torch.as_tensor(r.arc[lens])
    again = ph.arc_snr(arc, torch.as_tensor(r.model[lens]) - arc, bg).numpy()
    assert np.allclose(again, r.arc_snr[lens], rtol=1e-3)


def test_every_kind_present_and_labelled(arrays):
    kinds = arrays["kind"].astype(str)
    assert set(kinds) == set(KINDS)
    assert np.array_equal(arrays["labels"] == 1, kinds == "lens")
    lens = kinds == "lens"
    assert np.all((arrays["theta_e"][lens] >= 0.5) & (arrays["theta_e"][lens] <= 3.5))
    assert np.all(arrays["theta_e"][~lens] == 0) and np.all(arrays["arc_snr"][~lens] == 0)
    # the Einstein radii cover the range log-uniformly: each half (in log) holds about half the lenses
    frac = (arrays["theta_e"][lens] < np.sqrt(0.5 * 3.5)).mean()
    assert 0.35 < frac < 0.65


def test_the_lens_galaxy_alone_does_not_give_the_label_away(arrays):
    # elliptical centrals of lenses and of non-lenses come from one distribution of brightness
    kinds = arrays["kind"].astype(str)
    ell = np.isin(kinds, ["galaxy", "companion", "ring", "group"])
    a, b = arrays["lens_mag"][kinds == "lens"], arrays["lens_mag"][ell]
    assert abs(np.median(a) - np.median(b)) < 0.3


def test_companions_cluster_around_their_host(survey):
    # dN/dr ~ r^0.2 on 0.8-3.5": 23% within 1.5" (uniform in area: 14%), median 2.24" (2.54"), none outside
    kinds = np.full(2000, KINDS.index("companion"))
    scene = sample(survey, kinds, np.random.default_rng(5))
    comp = next(c for c in scene.comps if c.layer == "other")  # the companions' batch: drawn first
    r = np.hypot(comp.x - scene.lens_x[comp.rows], comp.y - scene.lens_y[comp.rows])
    assert r.min() >= 0.8 - 1e-9 and r.max() <= 3.5 + 1e-9
    assert np.mean(r < 1.5) == pytest.approx((1.5**1.2 - 0.8**1.2) / (3.5**1.2 - 0.8**1.2), abs=0.02)
    assert np.median(r) == pytest.approx(2.24, abs=0.06)


def test_tangential_companions_take_their_own_sizes(survey):
    # companion_arc_size moves only the tangential companions' R_e; every other draw keeps its values
    kinds = np.full(1500, KINDS.index("companion"))
    a = sample(survey, kinds, np.random.default_rng(5))
    b = sample(replace(survey, population=replace(survey.population, companion_arc_size=(0.25, 1.2))), kinds,
               np.random.default_rng(5))
    ca, cb = (next(c for c in s.comps if c.layer == "other") for s in (a, b))
    for f in ("rows", "x", "y", "q", "phi", "mags"):
        np.testing.assert_array_equal(getattr(ca, f), getattr(cb, f))
    moved = ca.size != cb.size
    angle = np.arctan2(ca.y - a.lens_y[ca.rows], ca.x - a.lens_x[ca.rows])
    tangential = 1 - np.cos(2 * (ca.phi - angle - np.pi / 2)) < 1e-9  # major axis along the tangent (exactly)
    np.testing.assert_array_equal(moved, tangential)
    assert 0.4 < tangential.mean() < 0.6
    assert ca.size.min() >= 0.1 and ca.size.max() <= 0.6
    assert cb.size[moved].min() >= 0.25 and cb.size[moved].max() <= 1.2
    assert np.median(cb.size[moved]) == pytest.approx(np.sqrt(0.25 * 1.2), rel=0.1)  # log-uniform


@pytest.mark.parametrize("lens_size", [(0.3, 0.9), (0.6, 2.6)])
def test_lens_galaxy_size_follows_theta_e(survey, lens_size):
    # R_e = theta_E * U(lens_size) + 0.2", capped at 4" here: the first central component is the bulge
    cap = max_galaxy_re(survey)
    assert cap == 4.0 and max_galaxy_re(load_survey("euclid-vis")) == 2.0  # 5/8 of the half-width
    pop = replace(survey.population, lens_size=lens_size)
    scene = sample(replace(survey, population=pop), np.full(3000, LENS), np.random.default_rng(2))
    bulge = next(c for c in scene.comps if c.layer == "lens")
    theta = scene.theta_e[bulge.rows]
    free = bulge.size < cap
    ratio = (bulge.size[free] - 0.2) / theta[free]
    assert ratio.min() >= lens_size[0] - 1e-9 and ratio.max() <= lens_size[1] + 1e-9
    assert np.all(bulge.size <= cap)
    small = theta * lens_size[1] + 0.2 < cap  # where the cap cannot act: the draw is uniform
    mid = (bulge.size[small] - 0.2) / theta[small] > (lens_size[0] + lens_size[1]) / 2
    assert np.mean(mid) == pytest.approx(0.5, abs=0.05)
    # theta_E up to 3.5": only a wide range reaches the cap
    assert (not free.all()) == (lens_size[1] * 3.5 + 0.2 > cap)


def test_lens_size_scatter_is_ln_normal_on_every_kind(survey):
    # The same seed draws the same theta_E and U(lens_size) first, so the sizes' ratio is the scatter alone
    kinds = np.resize(np.arange(len(KINDS)), 4000)

    def bulge_of(scatter, image_size=survey.image_size):
        pop = replace(survey.population, lens_size_scatter=scatter)
        scene = sample(replace(survey, population=pop, image_size=image_size), kinds, np.random.default_rng(5))
        return next(c for c in scene.comps if c.layer == "lens")

    plain, capped = bulge_of(0.0), bulge_of(0.5)
    assert np.array_equal(plain.rows, capped.rows)
    assert set(KINDS[k] for k in kinds[plain.rows]) >= {"lens", "galaxy", "companion"}
    assert capped.size.min() >= 0.1 and capped.size.max() == max_galaxy_re(survey)
    assert bulge_of(1.5).size.min() == 0.1  # the floor: no sub-pixel "galaxy" that is a star
    # a frame wide enough that the cap (64") never acts: the ratio is the whole ln-normal, lenses and not alike
    wide, wide_plain = bulge_of(0.5, 1024), bulge_of(0.0, 1024)
    assert wide.size.max() < max_galaxy_re(replace(survey, image_size=1024))
    ln = np.log(wide.size / wide_plain.size)
    is_lens = kinds[plain.rows] == LENS
    for rows in (is_lens, ~is_lens):
        assert ln[rows].std() == pytest.approx(0.5, abs=0.03) and abs(ln[rows].mean()) < 0.04


@pytest.mark.parametrize("text, error", [
    ("population:\nnuisances:\n", None),                          # empty sections: the defaults
    ("population: {lens_size: [2.6, 0.6]}\n", "lens_size"),        # reversed
    ("population: {lens_size: 2}\n", "lens_size"),                 # not a range
    ("population: {lens_size_scatter: -0.1}\n", "lens_size_scatter"),
    ("population: {lens_size_scatter: [0.1, 0.2]}\n", "lens_size_scatter"),
    ("population: {lens_size_scatter: 2.0}\n", "lens_size_scatter"),
    ("population: {lens_size_scatter: yes}\n", "lens_size_scatter"),             # YAML's true, not 1
    ("population: [1, 2]\n", "'population' holds list"),
    ("population: {companion_arc_size: [0, 1]}\n", "companion_arc_size"),   # log-uniform from 0
])
def test_preset_sections_are_checked(tmp_path, text, error):
    base = (Path(__file__).resolve().parents[1] / "configs" / "surveys" / "lsst-gri.yaml").read_text()
    head = base[:base.index("population:")]  # name, pixels and bands
    path = tmp_path / "p.yaml"
    path.write_text(head + text)
    if error is None:
        assert load_survey(str(path)).population.lens_size == (0.6, 2.6)
    else:
        with pytest.raises(ConfigError, match=f"{path}.*{error}"):
            load_survey(str(path))


def test_negative_mix(survey):
    mix = negative_mix(survey)
    assert set(mix) == set(NEGATIVES) and sum(mix.values()) == pytest.approx(1)
    m = negative_mix(survey, companion_fraction=0.5)
    assert m["companion"] == pytest.approx(0.5) and m["ring"] == pytest.approx(0.5 * mix["ring"] / (1 - mix["companion"]))
    assert negative_mix(survey, (("ring", 1), ("galaxy", 3))) == {"ring": 0.25, "galaxy": 0.75}
    with pytest.raises(ConfigError, match="lens"):
        negative_mix(survey, (("lens", 1.0),))
    kinds = simulate_arrays(survey, 64, np.random.default_rng(1), lens_fraction=0.0, mix=(("spiral", 1.0),))["kind"]
    assert set(kinds.astype(str)) == {"spiral"}


def _fwhm(k: np.ndarray) -> float:
    """Full width at half maximum along the middle row, by linear interpolation (pixels)."""
    row = k[k.shape[0] // 2] / k.max()
    above = np.flatnonzero(row >= 0.5)
    lo, hi = above[0], above[-1]
    left = lo - (row[lo] - 0.5) / (row[lo] - row[lo - 1])
    right = hi + (row[hi] - 0.5) / (row[hi] - row[hi + 1])
    return right - left


@pytest.mark.parametrize("beta", [0.0, 2.5, 4.0])
def test_psf_kernels_have_the_asked_fwhm_and_offset(beta):
    one = np.ones((1, 1))
    k = psfmod.kernels(1.0 * one, beta * one, 0 * one, 0 * one, 0 * one, 0 * one, 0.1, 61)[0, 0].numpy()
    assert k.sum() == pytest.approx(1, abs=1e-5)
    assert _fwhm(k) == pytest.approx(10.0, rel=0.02)  # 1" at 0.1"/px
    shifted = psfmod.kernels(one, beta * one, 0 * one, 0 * one, 0.05 * one, -0.1 * one, 0.1, 61)[0, 0].numpy()
    c = np.arange(61) - 30
    assert (shifted.sum(0) * c).sum() == pytest.approx(0.5, abs=0.05)    # +0.05" in x = +0.5 px (Moffat wings cut by the window: 0.05)
    assert (shifted.sum(1) * c).sum() == pytest.approx(-1.0, abs=0.05)   # -0.1" in y
    if beta:  # Moffat wings: more light far out than a Gaussian of the same FWHM
        g = psfmod.kernels(one, 0 * one, 0 * one, 0 * one, 0 * one, 0 * one, 0.1, 61)[0, 0].numpy()
        r = np.hypot(*np.meshgrid(c, c))
        assert k[r > 15].sum() > 5 * g[r > 15].sum()


def test_psf_ellipticity_keeps_area_and_stretches_along_its_angle():
    one = np.ones((1, 1))
    k = psfmod.kernels(one, 0 * one, 0.2 * one, 0 * one, 0 * one, 0 * one, 0.1, 61)[0, 0].numpy()
    c = np.arange(61) - 30
    var_x, var_y = (k.sum(0) * c**2).sum(), (k.sum(1) * c**2).sum()
    assert var_x / var_y == pytest.approx(1.5**2, rel=0.02)  # axis ratio (1-e)/(1+e) = 2/3: stretched along x
    r = psfmod.kernels(one, 0 * one, 0 * one, 0 * one, 0 * one, 0 * one, 0.1, 61)[0, 0].numpy()
    var_r = (r.sum(0) * c**2).sum()
    assert var_x * var_y == pytest.approx(var_r**2, rel=0.02)  # same area as the round PSF


def test_fft_convolution_equals_direct_convolution():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 20, 20, generator=g)
    kern = torch.rand(2, 3, 7, 7, generator=g)
    ours = psfmod.convolve(img, kern)
    for b in range(2):
        for c in range(3):
            ref = F.conv2d(img[b, c][None, None], kern[b, c].flip(0, 1)[None, None], padding=3)[0, 0]
            assert torch.allclose(ours[b, c], ref, atol=1e-4)


def test_seeing_sky_and_depth_vary_per_cutout_and_band(survey, arrays):
    fwhm = arrays["psf_fwhm"]
    assert fwhm.std(axis=0).min() > 0.05 and np.abs(fwhm[:, 0] - fwhm[:, 1]).max() > 0.01
    rng = np.random.default_rng(4)
    scene = sample(survey, np.zeros(256, dtype=np.int8), rng)
    scene.comps = []  # empty sky: only noise left
    scene.stars = Stars(*(getattr(scene.stars, f.name)[:0] for f in fields(Stars)))
    scene.obs.cosmic[:] = scene.obs.masked[:] = False
    scene.obs.sky_residual[:] = 0
    img = render(scene, survey, rng).images
    measured = img.std(axis=(2, 3))
    predicted = np.sqrt(ph.background(survey, scene.obs.sky_scale, scene.obs.depth))
    assert np.allclose(measured / predicted, 1, atol=0.06)
    assert np.all(predicted.std(0) / predicted.mean(0) > 0.1)  # the noise level itself varies per cutout and band


def test_artefacts_are_where_the_flags_say(arrays):
    flags, img = arrays["artefacts"], arrays["images"]
    masked = (flags & ARTEFACTS["masked"]) > 0
    assert masked.any() and (~masked).any()
    holes = ~np.isfinite(img).all(axis=(1, 2, 3)) | (img == 0).reshape(len(img), -1).any(1)
    assert holes[masked].all() and not holes[~masked].any()
    sat = (flags & ARTEFACTS["saturated_star"]) > 0
    assert sat.any()
    for i in np.flatnonzero(sat)[:5]:  # a flat top: the brightest value repeats (core and bleed trail)
        band = np.nan_to_num(img[i, 1], nan=-np.inf)
        assert (band == band.max()).sum() >= 3


def test_profiles_put_light_where_they_say():
    c = torch.linspace(-4, 4, 161)
    y, x = torch.meshgrid(c, c, indexing="ij")
    one = lambda v: torch.tensor([[[float(v)]]])  # noqa: E731
    ring = profiles.ring(x[None], y[None], one(0), one(0), one(1), one(0), one(2.0), one(0.2))[0]
    r = torch.hypot(x, y)
    assert ring[(r - 2).abs() < 0.1].mean() > 20 * ring[r < 1].mean()
    tail = profiles.tail(x[None], y[None], one(0), one(0), one(2.0), one(0), one(np.pi / 2), one(0.2))[0]
    theta = torch.atan2(y, x)
    on = (r - 2).abs() < 0.2
    assert tail[on & (theta > 0.2) & (theta < 1.3)].min() > 0 and tail[on & (theta < -0.2)].max() == 0
    arms = profiles.spiral(x[None], y[None], one(0), one(0), one(1), one(0), one(1.5), one(2), one(0.4), one(0),
                           one(4))[0]
    ring_r = (r - 1.5).abs() < 0.05
    assert arms[ring_r].max() > 3 * arms[ring_r].min()  # light concentrated in the arms


def test_preview_shows_every_kind(tmp_path, monkeypatch):
    from lenstrt import preview
    from lenstrt.data.simulate import SimSpec, simulate

    simulate(SimSpec(n=600, seed=5, shard_size=600, survey="lsst-gri-survey"), tmp_path / "s", progress=False)
    seen = {}
    monkeypatch.setattr(preview, "gallery", lambda imgs, titles, out, **kw: seen.update(titles=list(titles)) or out)
    preview.write_gallery(tmp_path / "s", tmp_path / "g.png")
    shown = {t.split(" ")[0].split(":")[0] for t in seen["titles"]}
    assert shown == set(KINDS)
    assert any("saturated star" in t for t in seen["titles"]) and any("masked" in t for t in seen["titles"])


def test_filled_arrays_have_no_masked_pixels_left(survey):
    from dataclasses import replace

    always_masked = replace(survey, nuisances=replace(survey.nuisances, masked=1.0))
    raw = simulate_arrays(always_masked, 16, np.random.default_rng(2))
    filled = simulate_arrays(always_masked, 16, np.random.default_rng(2), filled=True)
    assert not np.isfinite(raw["images"]).all() and np.isfinite(filled["images"]).all()
    keep = np.isfinite(raw["images"])
    assert np.array_equal(raw["images"][keep], filled["images"][keep])  # only the masked pixels change
