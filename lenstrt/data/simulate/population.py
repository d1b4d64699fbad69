"""Draws a batch of scenes: what is in each cutout (light components, mass, stars) and how it was
observed (PSF, sky, depth, artefacts), per cutout and band. Distributions and their sources:
docs/simulation.md.

Everything random comes from one numpy Generator, so a (seed, shard) pair fixes every byte. A scene is
a list of light components, each a batch over the systems that have it (rows may repeat: one row per
companion or knot), so rendering loops over component types, never over systems.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lenstrt.data.simulate.presets import Nuisances, Survey

KINDS = ("galaxy", "lens", "companion", "ring", "spiral", "merger", "edgeon", "group")  # kind codes 0..7
LENS = KINDS.index("lens")
NEGATIVES = tuple(k for k in KINDS if k != "lens")
# Satellites cluster around their host: xi(r) ~ r^-1.8 projects to a surface-density excess ~ r^-0.8, so
# dN/dr ~ r^0.2 (nearly uniform in radius): more close companions than a uniform-in-area draw, and close
# ones are the confusers (docs/simulation.md).
COMPANION_SLOPE = 0.2
MAX_GALAXY_RE = 0.625  # of the cutout's half-width: 4" in LSST's 12.8", 2" in Euclid's 6.4"


@dataclass
class Comp:
    """One light component over `rows` of the batch. Positions are arcsec from the cutout centre (in the
    source plane for layer "source"); mags [m, C] per band."""
    profile: str              # sersic | ring | spiral | tail
    layer: str                # lens (central light) | source (lensed) | other
    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    q: np.ndarray
    phi: np.ndarray
    size: np.ndarray          # Re (sersic), ring radius, disc scale length (spiral), tail radius
    mags: np.ndarray
    shape: dict[str, np.ndarray] = field(default_factory=dict)  # n, width, arms, pitch, span, ...


@dataclass
class Stars:
    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    mags: np.ndarray          # [s, C]
    saturated: np.ndarray     # [s] bool: flat-topped core, spikes, bleed trail
    spike_angle: np.ndarray
    spike_length: np.ndarray  # pixels


@dataclass
class Observing:
    """Per cutout and band [B, C] unless noted."""
    fwhm: np.ndarray          # PSF FWHM, arcsec
    beta: np.ndarray          # Moffat beta; 0 = Gaussian
    e: np.ndarray             # PSF ellipticity
    e_angle: np.ndarray
    dx: np.ndarray            # astrometric offset of the band, arcsec
    dy: np.ndarray
    sky_scale: np.ndarray     # sky brightness relative to the preset
    depth: np.ndarray         # exposure time relative to the preset
    sky_residual: np.ndarray  # constant left by sky subtraction, in units of the background noise
    cosmic: np.ndarray        # [B] bool
    masked: np.ndarray        # [B] bool


@dataclass
class Scene:
    kind: np.ndarray          # [B] int8 (index into KINDS)
    lens_x: np.ndarray
    lens_y: np.ndarray
    theta_e: np.ndarray       # mass, meaningful where kind == lens
    mass_q: np.ndarray
    mass_phi: np.ndarray
    gamma1: np.ndarray
    gamma2: np.ndarray
    target_snr: np.ndarray    # arc S/N the lensed source is scaled to (0 for non-lenses)
    comps: list[Comp]
    stars: Stars
    obs: Observing


class _Draw:
    """Shared draws: colours between the preset's red (lens) and blue (source) tables."""

    def __init__(self, survey: Survey, rng: np.random.Generator):
        self.s, self.rng = survey, rng
        pop = survey.population
        self.red = np.array([pop.lens_colors.get(b, 0.0) for b in survey.band_names])
        self.blue = np.array([pop.source_colors.get(b, 0.0) for b in survey.band_names])
        self.ref = survey.band_names.index(survey.reference_band)
        self.comps: list[Comp] = []

    def u(self, lo, hi, n):
        return self.rng.uniform(lo, hi, n)

    def logu(self, lo, hi, n):
        return np.exp(self.rng.uniform(np.log(lo), np.log(hi), n))

    def mags(self, ref_mag: np.ndarray, redness: np.ndarray) -> np.ndarray:
        """redness 0 = the blue table, 1 = the red one (beyond either end extrapolates)."""
        col = self.blue + np.asarray(redness)[:, None] * (self.red - self.blue)
        col = col + self.s.population.color_scatter * self.rng.standard_normal(col.shape)
        col[:, self.ref] = 0.0
        return np.asarray(ref_mag)[:, None] + col

    def add(self, profile, layer, rows, x, y, q, phi, size, mags, **shape):
        if len(rows):
            self.comps.append(Comp(profile, layer, np.asarray(rows), np.asarray(x, float), np.asarray(y, float),
                                   np.asarray(q, float), np.asarray(phi, float), np.asarray(size, float),
                                   np.asarray(mags, float), {k: np.asarray(v, float) for k, v in shape.items()}))

    def sersics(self, rows, x, y, q, phi, n, re, mags, layer="other"):
        self.add("sersic", layer, rows, x, y, q, phi, re, mags, n=n)

    def around(self, rows, cx, cy, r_lo, r_hi, slope=1.0):
        """Points at radii r_lo..r_hi around (cx, cy) with dN/dr ~ r^slope (1: uniform in area); also
        returns their angles."""
        if slope <= -1:
            raise ValueError(f"around: slope {slope} must be > -1 (the radial density must integrate)")
        m = len(rows)
        k = slope + 1.0
        r = self.u(r_lo**k, r_hi**k, m) ** (1.0 / k)
        a = self.u(0, 2 * np.pi, m)
        return cx + r * np.cos(a), cy + r * np.sin(a), a


def max_galaxy_re(survey: Survey) -> float:
    """The largest central-galaxy R_e, arcsec (rounded so LSST's cap is exactly 4")."""
    return round(MAX_GALAXY_RE * survey.image_size * survey.pixel_scale / 2, 6)


def sample(survey: Survey, kinds: np.ndarray, rng: np.random.Generator, simple: bool = False) -> Scene:
    """`simple`: one Sersic lens light and one Sersic source, no neighbours, stars or nuisances (the
    physics the lenstronomy cross-check compares)."""
    pop = survey.population
    nui = Nuisances.off() if simple else survey.nuisances
    d = _Draw(survey, rng)
    b = len(kinds)
    kinds = np.asarray(kinds).astype(np.int8)
    lens = np.flatnonzero(kinds == LENS)
    cx, cy = rng.normal(0, 0.1, b), rng.normal(0, 0.1, b)
    # Every cutout draws an Einstein radius: for non-lenses it sets only the galaxy's size and brightness,
    # so those alone never tell a lens galaxy from a plain one.
    theta = d.logu(*pop.theta_e, b)
    size_mag = d.u(*pop.lens_mag, b) - 2.5 * np.log10(theta)   # half the Faber-Jackson slope (L ~ theta_E^2)
    half = survey.image_size * survey.pixel_scale / 2
    # R_e follows theta_E (both grow with the velocity dispersion) with the scatter the preset allows; capped so
    # a group-scale theta_E does not spread the galaxy over the cutout's frame, where the model reads the sky
    gal_re = theta * d.u(*pop.lens_size, b) + 0.2
    if pop.lens_size_scatter > 0:  # drawn only when asked, so a preset without it keeps its random stream (and bytes)
        # R_e at fixed theta_E (velocity dispersion) scatters ~0.1-0.2 dex; floored at half an LSST pixel
        gal_re = np.maximum(gal_re * np.exp(rng.normal(0.0, pop.lens_size_scatter, b)), 0.1)
    gal_re = np.minimum(gal_re, max_galaxy_re(survey))
    gal_phi = d.u(0, np.pi, b)
    gal_q = d.u(0.5, 1.0, b)

    def ellipticals(rows, disc):
        m = len(rows)
        mag = size_mag[rows]
        d.sersics(rows, cx[rows], cy[rows], gal_q[rows], gal_phi[rows], d.u(2.5, 6.0, m), gal_re[rows],
                  d.mags(mag, d.u(0.85, 1.1, m)), layer="lens")
        has = d.u(0, 1, m) < disc  # a disc: bluer and larger, so colour changes with radius
        r, k = rows[has], int(has.sum())
        d.sersics(r, cx[r], cy[r], d.u(0.3, 1.0, k), gal_phi[r] + rng.normal(0, 0.3, k), np.ones(k),
                  gal_re[r] * d.u(1.5, 3.0, k), d.mags(mag[has] + d.u(0.3, 2.0, k), d.u(0.3, 0.7, k)), layer="lens")

    def companions(rows, r_lo=0.8, r_hi=3.5):
        rows = np.repeat(rows, rng.integers(1, 5, len(rows)))
        m = len(rows)
        x, y, a = d.around(rows, cx[rows], cy[rows], r_lo, r_hi, slope=COMPANION_SLOPE)
        tangential = d.u(0, 1, m) < 0.5  # arc-like: elongated along the tangent
        phi = np.where(tangential, a + np.pi / 2, d.u(0, np.pi, m))
        q = np.where(tangential, d.u(0.15, 0.5, m), d.u(0.4, 1.0, m))
        colour = rng.choice(3, m, p=[0.6, 0.25, 0.15])  # blue, red, in between
        red = np.choose(colour, [d.u(-0.3, 0.3, m), d.u(0.7, 1.2, m), d.u(0.3, 0.7, m)])
        # one draw whatever the ranges, so the default size range keeps the random stream (and bytes) of before
        n = d.u(0.5, 1.5, m)
        lo, hi = np.log(np.where(tangential[:, None], pop.companion_arc_size, (0.1, 0.6))).T
        size = np.exp(rng.uniform(lo, hi, m))
        d.sersics(rows, x, y, q, phi, n, size, d.mags(d.u(*pop.companion_mag, m), red))

    def knots(rows, x, y, mag, spread=0.0):
        m = len(rows)
        d.sersics(rows, x + rng.normal(0, spread, m), y + rng.normal(0, spread, m), d.u(0.6, 1, m),
                  d.u(0, np.pi, m), d.u(0.5, 1.0, m), d.u(0.03, 0.12, m), d.mags(mag, d.u(-0.3, 0.1, m)))

    def rows_of(name):
        return np.flatnonzero(kinds == KINDS.index(name))

    # --- central light: an elliptical (lens, galaxy, companion, ring, group)
    ell = np.flatnonzero(np.isin(kinds, [KINDS.index(k) for k in ("lens", "galaxy", "companion", "ring", "group")]))
    ellipticals(ell, disc=0.0 if simple else 0.3)

    # --- lensed source: a Sersic, sometimes a second component, star-forming clumps; its brightness is set
    # later from the drawn arc S/N
    m = len(lens)
    r_src = theta[lens] * np.sqrt(d.u(0, 1, m)) * 0.5
    a_src = d.u(0, 2 * np.pi, m)
    sx, sy = cx[lens] + r_src * np.cos(a_src), cy[lens] + r_src * np.sin(a_src)
    src_re = d.logu(0.08, 0.5, m)
    src_mag = 24.0 + np.zeros(m)
    d.sersics(lens, sx, sy, d.u(0.3, 1.0, m), d.u(0, np.pi, m), d.u(0.5, 2.5, m), src_re,
              d.mags(src_mag, d.u(-0.2, 0.4, m)), layer="source")
    if not simple:
        two = d.u(0, 1, m) < 0.25
        d.sersics(lens[two], sx[two] + rng.normal(0, 0.2, two.sum()), sy[two] + rng.normal(0, 0.2, two.sum()),
                  d.u(0.3, 1, two.sum()), d.u(0, np.pi, two.sum()), d.u(0.5, 1.5, two.sum()),
                  d.logu(0.05, 0.3, two.sum()), d.mags(src_mag[two] + d.u(0, 1.5, two.sum()), d.u(-0.2, 0.6, two.sum())),
                  layer="source")
        k = rng.integers(0, 5, m)
        rr = np.repeat(np.arange(m), k)
        if len(rr):
            j = len(rr)
            d.sersics(lens[rr], sx[rr] + rng.normal(0, 1.2, j) * src_re[rr], sy[rr] + rng.normal(0, 1.2, j) * src_re[rr],
                      d.u(0.6, 1, j), d.u(0, np.pi, j), d.u(0.5, 1.0, j), d.u(0.02, 0.08, j),
                      d.mags(src_mag[rr] + d.u(1.0, 3.0, j), d.u(-0.3, 0.1, j)), layer="source")
        # companions are not a label: some lenses have them too
        companions(lens[d.u(0, 1, m) < pop.lens_with_companions])

    companions(rows_of("companion"))

    # --- ring galaxies: a blue ring (inclined), with star-forming knots on it
    r = rows_of("ring")
    m = len(r)
    if m:
        rad, q, phi = d.u(0.8, 3.0, m), d.u(0.6, 1.0, m), d.u(0, np.pi, m)
        ring_mag = size_mag[r] + d.u(0.5, 3.5, m)
        d.add("ring", "other", r, cx[r], cy[r], q, phi, rad, d.mags(ring_mag, d.u(-0.2, 0.3, m)),
              width=rad * d.u(0.06, 0.2, m))
        kk = np.repeat(np.arange(m), rng.integers(2, 7, m))
        t = d.u(0, 2 * np.pi, len(kk))
        ex, ey = rad[kk] * np.cos(t), rad[kk] * q[kk] * np.sin(t)
        c, s = np.cos(phi[kk]), np.sin(phi[kk])
        knots(r[kk], cx[r][kk] + c * ex - s * ey, cy[r][kk] + s * ex + c * ey, ring_mag[kk] + d.u(1.0, 2.5, len(kk)))

    # --- spirals: a small red bulge, a disc with logarithmic blue arms, knots along the arms
    r = rows_of("spiral")
    m = len(r)
    if m:
        bulge_mag = size_mag[r] + 0.5
        d.sersics(r, cx[r], cy[r], d.u(0.6, 1, m), gal_phi[r], d.u(1.5, 4.0, m), d.u(0.2, 0.6, m),
                  d.mags(bulge_mag, d.u(0.8, 1.1, m)), layer="lens")
        h, q, pitch, arms = d.u(0.5, 1.5, m), d.u(0.35, 1.0, m), np.radians(d.u(10, 35, m)), rng.choice([2, 2, 3], m)
        phase = d.u(0, 2 * np.pi, m)
        disc_mag = bulge_mag + d.u(-1.0, 1.0, m)
        d.add("spiral", "other", r, cx[r], cy[r], q, gal_phi[r], h, d.mags(disc_mag, d.u(0.0, 0.5, m)),
              arms=arms, pitch=pitch, phase=phase, contrast=d.u(2, 6, m))
        kk = np.repeat(np.arange(m), rng.integers(3, 9, m))
        j = len(kk)
        rad = h[kk] * d.u(0.8, 3.0, j)
        arm = rng.integers(0, 3, j) % arms[kk]
        t = (np.log(rad) / np.tan(pitch[kk]) + (phase[kk] + 2 * np.pi * arm) / arms[kk])  # on an arm
        ex, ey = rad * np.cos(t), rad * q[kk] * np.sin(t)
        c, s = np.cos(gal_phi[r][kk]), np.sin(gal_phi[r][kk])
        knots(r[kk], cx[r][kk] + c * ex - s * ey, cy[r][kk] + s * ex + c * ey, disc_mag[kk] + d.u(1.5, 3.0, j))

    # --- mergers: two galaxies and curved tidal tails (arcs that are not lensed)
    r = rows_of("merger")
    m = len(r)
    if m:
        x2, y2, _ = d.around(r, cx[r], cy[r], 0.5, 2.5)
        d.sersics(r, cx[r], cy[r], d.u(0.4, 1, m), gal_phi[r], d.u(1.0, 4.0, m), gal_re[r],
                  d.mags(size_mag[r], d.u(0.3, 1.0, m)), layer="lens")
        d.sersics(r, x2, y2, d.u(0.4, 1, m), d.u(0, np.pi, m), d.u(1.0, 4.0, m), gal_re[r] * d.u(0.4, 1.0, m),
                  d.mags(size_mag[r] + d.u(0, 1.5, m), d.u(0.3, 1.0, m)))
        tt = np.repeat(np.arange(m), rng.integers(1, 3, m))
        j = len(tt)
        host = d.u(0, 1, j) < 0.5
        hx, hy = np.where(host, cx[r][tt], x2[tt]), np.where(host, cy[r][tt], y2[tt])
        d.add("tail", "other", r[tt], hx, hy, np.ones(j), d.u(0, 2 * np.pi, j), d.u(1.2, 3.5, j),
              d.mags(size_mag[r][tt] + d.u(1.5, 4.0, j), d.u(0.0, 0.8, j)),
              width=d.u(0.1, 0.35, j), span=np.radians(d.u(60, 160, j)))

    # --- edge-on discs, most with a small bulge
    r = rows_of("edgeon")
    m = len(r)
    if m:
        disc_mag = size_mag[r] + d.u(0, 1.0, m)
        d.sersics(r, cx[r], cy[r], d.u(0.08, 0.22, m), gal_phi[r], d.u(0.8, 1.5, m), d.u(0.8, 2.5, m),
                  d.mags(disc_mag, d.u(0.2, 0.9, m)), layer="lens")
        bb = d.u(0, 1, m) < 0.6
        d.sersics(r[bb], cx[r][bb], cy[r][bb], d.u(0.6, 0.9, bb.sum()), gal_phi[r][bb], d.u(2, 4, bb.sum()),
                  d.u(0.2, 0.5, bb.sum()), d.mags(disc_mag[bb] + d.u(0.5, 2.0, bb.sum()), d.u(0.8, 1.1, bb.sum())),
                  layer="lens")

    # --- groups: more red ellipticals of similar colour around the central one
    r = rows_of("group")
    if len(r):
        gg = np.repeat(r, rng.integers(1, 5, len(r)))
        j = len(gg)
        x, y, _ = d.around(gg, cx[gg], cy[gg], 1.5, 4.0)
        d.sersics(gg, x, y, d.u(0.5, 1, j), d.u(0, np.pi, j), d.u(2.5, 5, j), d.u(0.3, 1.2, j),
                  d.mags(size_mag[gg] + d.u(0, 2.0, j), d.u(0.85, 1.1, j)))

    # --- field galaxies anywhere in the cutout (not near the centre), for every kind
    nn = np.minimum(rng.poisson(nui.neighbours, b), 3)
    gg = np.repeat(np.arange(b), nn)
    if len(gg):
        j = len(gg)
        x, y, _ = d.around(gg, 0.0, 0.0, 2.0, half * 1.3)
        d.sersics(gg, x, y, d.u(0.3, 1, j), d.u(0, np.pi, j), d.u(0.7, 4.0, j), d.logu(0.15, 1.0, j),
                  d.mags(d.u(20.0, 25.5, j), d.u(-0.2, 1.1, j)))

    stars = _stars(d, b, nui, half)
    target = np.zeros(b)
    target[lens] = d.logu(*_snr_range(pop), len(lens))
    return Scene(kind=kinds, lens_x=cx, lens_y=cy, theta_e=theta, mass_q=d.u(0.5, 1.0, b),
                 mass_phi=gal_phi + rng.normal(0, 0.3, b), gamma1=rng.normal(0, 0.04, b),
                 gamma2=rng.normal(0, 0.04, b), target_snr=target, comps=d.comps, stars=stars,
                 obs=_observing(survey, nui, rng, b))


def _snr_range(pop) -> tuple[float, float]:
    lo, hi = pop.arc_snr
    return max(lo, pop.min_arc_snr), max(hi, pop.min_arc_snr)


def _stars(d: _Draw, b: int, nui: Nuisances, half: float) -> Stars:
    rng = d.rng
    n = np.minimum(rng.poisson(nui.stars, b), 2)
    rows = np.repeat(np.arange(b), n)
    sat_rows = np.flatnonzero(d.u(0, 1, b) < nui.saturated)
    rows = np.concatenate([rows, sat_rows])
    m = len(rows)
    saturated = np.arange(m) >= m - len(sat_rows)
    inner = half * 0.9
    x, y = d.u(-inner, inner, m), d.u(-inner, inner, m)
    mag = np.where(saturated, d.u(12.0, 15.0, m), d.u(18.0, 24.0, m))
    return Stars(rows=rows, x=x, y=y, mags=d.mags(mag, d.u(-0.5, 2.0, m)), saturated=saturated,
                 spike_angle=d.u(0, np.pi / 2, m), spike_length=d.u(5, 15, m))


def _observing(survey: Survey, nui: Nuisances, rng: np.random.Generator, b: int) -> Observing:
    nb = len(survey.bands)
    seeing = np.array([band.seeing for band in survey.bands])
    factor = np.exp(nui.seeing_scatter * rng.standard_normal((b, 1)) + nui.band_seeing_scatter * rng.standard_normal((b, nb)))
    fwhm = np.maximum(seeing * factor, 1.2 * survey.pixel_scale)
    moffat = rng.uniform(0, 1, (b, 1)) < nui.moffat_fraction
    beta = np.where(moffat, rng.uniform(*nui.moffat_beta, (b, 1)), 0.0) * np.ones((1, nb))
    ref = survey.band_names.index(survey.reference_band)
    off = nui.band_offset * rng.standard_normal((2, b, nb))
    off[:, :, ref] = 0.0  # astrometry is tied to the reference band
    return Observing(
        fwhm=fwhm, beta=beta, e=rng.uniform(0, nui.psf_ellipticity, (b, 1)) * np.ones((1, nb)),
        e_angle=rng.uniform(0, np.pi, (b, 1)) + 0.1 * rng.standard_normal((b, nb)),
        dx=off[0], dy=off[1],
        sky_scale=10 ** (-0.4 * nui.sky_scatter * rng.standard_normal((b, nb))),
        depth=np.exp(nui.depth_scatter * rng.standard_normal((b, nb))),
        sky_residual=nui.sky_residual * rng.standard_normal((b, nb)),
        cosmic=rng.uniform(0, 1, b) < nui.cosmic_rays, masked=rng.uniform(0, 1, b) < nui.masked,
    )
