"""Our lenses next to lenstronomy's in one stratum of the quality bar: what differs where a model fails?

Draws N lenses from our simulator (a preset, its Einstein radius and arc S/N ranges narrowed to the
stratum) and N from the cross-simulator set's generator (benchmarks/cross_sim.py, its Einstein radius
narrowed the same way and each source scaled to an arc S/N drawn log-uniformly in the stratum), keeps each
one's noise-free arc and everything else, and prints the 10th / 50th / 90th percentiles of statistics
that do not depend on either simulator's units:

- contrast_i / contrast_g: arc flux over the rest's flux in the pixels where the arc exceeds 1 sigma of the
  background (the arc S/N's own mask), i and g band;
- arc_over_lens_2as_i: arc flux over the rest's flux within 2" of the centre (i);
- peak_ratio_i: at the arc's brightest pixel, arc over rest (i);
- lens_sb_at_te_over_sigma: the rest's mean surface brightness on the Einstein ring, in background sigmas (i);
- arc_g_i, lens_g_i: colours (mag) of the arc and of the rest within 2";
- npix_i, arc_r_over_te: the arc's extent (pixels above 1 sigma) and flux-weighted radius over theta_E;
- arc_dr_over_fwhm: the arc's flux-weighted radial spread (std of radius) in the mask over the i seeing FWHM
  (below ~0.4 the arc is unresolved across);
- arc_span_deg: the angle around the centre the arc covers (10-degree sectors holding >= 5% of its flux);
- counter_frac_i: the share of the arc's flux more than 90 degrees from its brightest pixel (a counter-image);
- lens_conc: the rest's flux within 1" over within 3"; fwhm_i: the i-band seeing; snr: the arc S/N.

    python benchmarks/stratum_gap.py --theta-e 0.5,1 --snr 20,50 --n 200 [--survey lsst-gri] [--set lens_mag=17.5,21]

It found the default's small-theta_E lenses fainter than lenstronomy's at the same arc S/N
(benchmarks/results/2026-12-01-cpu-bright-lenses.md). It reads the simulators, not a model; the judge's
set itself is never drawn (other seeds, narrowed ranges).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

STATS = ("contrast_i", "contrast_g", "arc_over_lens_2as_i", "peak_ratio_i", "lens_sb_at_te_over_sigma",
         "arc_g_i", "lens_g_i", "npix_i", "arc_r_over_te", "arc_dr_over_fwhm", "arc_span_deg", "counter_frac_i",
         "lens_conc", "fwhm_i", "snr")


def lens_stats(arc: np.ndarray, rest: np.ndarray, bkg_sigma: np.ndarray, zero: np.ndarray, theta_e: float,
               pixel_scale: float, fwhm_i: float) -> dict[str, float]:
    """One lens. arc, rest [3, H, W] (g, r, i) noise-free in any linear unit; bkg_sigma [3] in that unit;
    zero [3]: the flux of a 0 mag source in that unit (for colours); fwhm_i: the i seeing, arcsec."""
    c = (np.arange(arc.shape[-1]) - (arc.shape[-1] - 1) / 2) * pixel_scale
    yy, xx = np.meshgrid(c, c, indexing="ij")
    rr = np.hypot(xx, yy)
    g, i = 0, 2
    tiny = 1e-30
    mi, mg = arc[i] > bkg_sigma[i], arc[g] > bkg_sigma[g]
    ap = rr < 2.0
    k = np.unravel_index(np.argmax(arc[i]), arc[i].shape)
    ring = np.abs(rr - theta_e) < 0.15

    w = np.where(mi, arc[i], 0.0)
    wsum = max(w.sum(), tiny)
    r_mean = (w * rr).sum() / wsum
    pa = np.arctan2(yy, xx)
    sector = ((pa + np.pi) // np.radians(10)).astype(int) % 36
    in_sector = np.bincount(sector.ravel(), weights=w.ravel(), minlength=36)
    away = np.abs(np.angle(np.exp(1j * (pa - pa[k])))) > np.pi / 2

    def colour(img, where):
        fg, fi = img[g][where].sum() / zero[g], img[i][where].sum() / zero[i]
        return float(-2.5 * np.log10(max(fg, tiny) / max(fi, tiny)))

    return {
        "contrast_i": float(arc[i][mi].sum() / max(rest[i][mi].sum(), tiny)),
        "contrast_g": float(arc[g][mg].sum() / max(rest[g][mg].sum(), tiny)) if mg.any() else 0.0,
        "arc_over_lens_2as_i": float(arc[i][ap].sum() / max(rest[i][ap].sum(), tiny)),
        "peak_ratio_i": float(arc[i][k] / max(rest[i][k], tiny)),
        "lens_sb_at_te_over_sigma": float(rest[i][ring].mean() / bkg_sigma[i]) if ring.any() else 0.0,
        "arc_g_i": colour(arc, np.ones_like(ap)),
        "lens_g_i": colour(rest, ap),
        "npix_i": float(mi.sum()),
        "arc_r_over_te": float((arc[i] * rr).sum() / max(arc[i].sum(), tiny) / theta_e),
        "arc_dr_over_fwhm": float(np.sqrt((w * (rr - r_mean) ** 2).sum() / wsum) / fwhm_i),
        "arc_span_deg": float(10 * (in_sector >= 0.05 * wsum).sum()) if mi.any() else 0.0,
        "counter_frac_i": float(w[away].sum() / wsum),
        "lens_conc": float(rest[i][rr < 1].sum() / max(rest[i][rr < 3].sum(), tiny)),
        "fwhm_i": float(fwhm_i),
    }


def ours(survey_name: str, n: int, seed: int, theta_e: tuple[float, float], snr: tuple[float, float],
         overrides: dict[str, tuple[float, ...]] | None = None) -> list[dict[str, float]]:
    """n lenses of our simulator in the stratum (the preset's ranges narrowed to it)."""
    from lenstrt.data.simulate import photometry as ph
    from lenstrt.data.simulate.population import LENS, sample
    from lenstrt.data.simulate.presets import load_survey
    from lenstrt.data.simulate.render import render
    from lenstrt.errors import ConfigError

    sv = load_survey(survey_name)
    if not {"g", "r", "i"} <= set(sv.band_names):
        raise ConfigError(f"{survey_name}: has bands {','.join(sv.band_names)}; the comparison needs g, r and i "
                          "(lenstronomy's set is LSST g,r,i): pass an LSST preset such as lsst-gri")
    pop = dataclasses.replace(sv.population, theta_e=theta_e, arc_snr=snr, **(overrides or {}))
    sv = dataclasses.replace(sv, population=pop)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float]] = []
    gri = [sv.band_names.index(b) for b in ("g", "r", "i")]
    zero_mag = np.array([ph.mag_to_counts(np.array(0.0), sv.bands[c]) for c in gri])  # e- of a 0 mag source
    for start in range(0, n, 100):
        kinds = np.full(min(100, n - start), LENS, dtype=np.int8)
        scene = sample(sv, kinds, rng)
        r = render(scene, sv, rng, keep_model=True)
        assert r.model is not None and r.arc is not None
        bg = ph.background(sv, scene.obs.sky_scale, scene.obs.depth)
        for j in range(len(kinds)):
            arc, rest = r.arc[j, gri], r.model[j, gri] - r.arc[j, gri]
            d = lens_stats(arc, rest, np.sqrt(bg[j, gri]), zero_mag * scene.obs.depth[j, gri], float(scene.theta_e[j]),
                           sv.pixel_scale, float(scene.obs.fwhm[j, gri[2]]))
            d.update(snr=float(r.arc_snr[j]))
            rows.append(d)
    return rows


def _log_scale_for(xs, arc, rest, sims, bkg, target: float) -> float | None:
    """log10 of the factor that gives the arc the target S/N (bisection: the S/N rises with the flux), or None
    when even 10^4 times the arc falls short."""

    def snr_at(log_scale: float) -> float:
        a = arc * 10**log_scale
        return xs.arc_snr(a, xs._variance(sims, a + rest), bkg)

    lo, hi = -12.0, 4.0
    if snr_at(hi) < target:
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if snr_at(mid) < target else (lo, mid)
    return hi


def theirs(n: int, seed: int, theta_e: tuple[float, float], snr: tuple[float, float]) -> list[dict[str, float]]:
    """n lenses of the cross-simulator set's generator in the stratum: its theta_E range narrowed, each
    source scaled (bisection in log flux; the S/N rises with it) to an S/N drawn log-uniformly in the stratum."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cross_sim as xs

    full, xs.THETA_E = xs.THETA_E, theta_e  # its generator reads the module's range at each draw
    try:
        rng = np.random.default_rng(seed)
        zero = np.array([10 ** (0.4 * xs._band_kwargs(b)["magnitude_zero_point"]) for b in xs.BANDS])
        rows: list[dict[str, float]] = []
        while len(rows) < n:
            scene = xs.Scene("lens", xs._psf(rng))
            xs._lens(rng, scene)
            xs._field(rng, scene)
            arc, rest, sims = xs._render(scene)
            bkg = np.array([s.background_noise for s in sims])
            target = float(np.exp(rng.uniform(*np.log(snr))))

            log_scale = _log_scale_for(xs, arc, rest, sims, bkg, target)
            if log_scale is None:
                continue
            a = arc * 10**log_scale
            d = lens_stats(a, rest, bkg, zero, scene.theta_e, xs.PIX, float(scene.psf[2]["seeing"]))
            d.update(snr=xs.arc_snr(a, xs._variance(sims, a + rest), bkg))
            rows.append(d)
        return rows
    finally:
        xs.THETA_E = full


def table(a: list[dict[str, float]], b: list[dict[str, float]], names: tuple[str, str]) -> str:
    head = f"| statistic | {names[0]} p10 / p50 / p90 | {names[1]} p10 / p50 / p90 |\n|---|---|---|\n"
    lines = []
    for k in STATS:
        pa = np.percentile([r[k] for r in a], [10, 50, 90])
        pb = np.percentile([r[k] for r in b], [10, 50, 90])
        lines.append(f"| {k} | {' / '.join(f'{v:.3g}' for v in pa)} | {' / '.join(f'{v:.3g}' for v in pb)} |")
    return head + "\n".join(lines)


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two numbers, lo,hi (e.g. 0.5,1)") from None
    return lo, hi


def _override(text: str) -> tuple[str, tuple[float, float]]:
    """KEY=LO,HI for --set, KEY a range of a preset's population."""
    from lenstrt.data.simulate.presets import Population

    key, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=LO,HI (e.g. lens_mag=17.5,21)")
    # only the (lo, hi) ranges: a colour table, the negative mix or a scalar would be replaced by a pair unchecked
    ranges = sorted(f.name for f in dataclasses.fields(Population) if isinstance(f.default, tuple))
    if key not in ranges:
        raise argparse.ArgumentTypeError(f"{key}: not a population key of a preset that takes LO,HI "
                                         f"(one of {', '.join(ranges)})")
    return key, _pair(val)


def main(argv=None) -> None:
    from lenstrt.errors import LenstrtError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survey", default="lsst-gri", help="our preset (name or YAML); must have g, r, i bands")
    ap.add_argument("--theta-e", type=_pair, default=(0.5, 1.0), help="lo,hi arcsec")
    ap.add_argument("--snr", type=_pair, default=(20.0, 50.0), help="lo,hi arc S/N")
    ap.add_argument("--n", type=int, default=200, help="lenses from each simulator")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=LO,HI",
                    help="override a population range of our preset, e.g. lens_mag=17.5,21")
    a = ap.parse_args(argv)
    overrides = dict(a.set)
    try:
        mine = ours(a.survey, a.n, a.seed, a.theta_e, a.snr, overrides)
    except LenstrtError as e:  # an unknown preset, a YAML that does not load
        ap.error(str(e))
    other = theirs(a.n, a.seed + 1, a.theta_e, a.snr)
    label = a.survey + "".join(f" {k}={v[0]:g},{v[1]:g}" for k, v in overrides.items())
    print(f"theta_E {a.theta_e[0]:g}-{a.theta_e[1]:g}\", arc S/N {a.snr[0]:g}-{a.snr[1]:g}, {a.n} lenses each\n")
    print(table(mine, other, (label, "lenstronomy (cross_sim.py)")))


if __name__ == "__main__":
    main()
