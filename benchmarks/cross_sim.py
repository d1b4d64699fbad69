"""Cross-simulator evaluation set (issue #15): LSST-like g, r, i cutouts made with lenstronomy.

Deliberately independent of lenstrt's own simulator (lenstrt.data.simulate, caustics-based): its own
populations, PSFs (lenstronomy GAUSSIAN or a pixelised Moffat), photometry (lenstronomy's LSST
ObservationConfig) and noise (lenstronomy's noise_for_model). Only the file format is shared
(lenstrt.data.shards.write_shard, lenstrt.io.write_json), so our readers load it. See docs/cross_sim.md.

    python benchmarks/cross_sim.py --out DIR [--n 10000] [--seed 2026] [--lens-fraction 0.4]
"""

import argparse
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BANDS = ("g", "r", "i")
NPIX, PIX = 64, 0.2
NUMERICS = {"supersampling_factor": 2, "supersampling_convolution": False}
SURVEY = "lsst-gri-lenstronomy"
UNITS = "e- per second of the 10-year coadd (lenstronomy 'e-' data units), sky-subtracted"
KINDS = ("lens", "galaxy", "companion", "group", "edgeon")
NEGATIVE_MIX = {"companion": 0.40, "galaxy": 0.30, "group": 0.15, "edgeon": 0.15}
THETA_E = (0.5, 3.5)
SRC_MAG_I = (23.0, 28.0)
SNR_MIN = 10.0
SEEING_SCATTER, SEEING_CORR = 0.15, 0.7
MOFFAT_SIZE, MOFFAT_SUB = 25, 5
HALF = NPIX * PIX / 2


@dataclass
class Scene:
    """One cutout before rendering. Light components are (profile, kwargs without amp, mags [g, r, i])."""
    kind: str
    psf: list[dict]
    light: list[tuple[str, dict, np.ndarray]] = field(default_factory=list)
    stars: list[tuple[float, float, np.ndarray]] = field(default_factory=list)
    mass: list[tuple[str, dict]] = field(default_factory=list)
    source: list[tuple[str, dict, np.ndarray]] = field(default_factory=list)
    theta_e: float = 0.0


def arc_snr(arc: np.ndarray, variance: np.ndarray, bkg_sigma: np.ndarray) -> float:
    """Issue #15's arc S/N. arc: noise-free lensed source after the PSF [B, H, W]; variance: full model
    variance (source + lens + sky + read) [B, H, W]; bkg_sigma: per-band sky+read sigma [B]. Per band,
    over the pixels where the arc exceeds 1 sigma of the background: sum(arc) / sqrt(sum(variance));
    bands add in quadrature."""
    total = 0.0
    for a, v, s in zip(arc, variance, np.asarray(bkg_sigma, dtype=float)):
        m = a > s
        if m.any():
            total += float(a[m].sum()) ** 2 / float(v[m].sum())
    return float(np.sqrt(total))


@functools.cache
def _band_kwargs(band: str) -> dict:
    from lenstronomy.SimulationAPI.ObservationConfig.LSST import LSST

    return LSST(band=band, psf_type="GAUSSIAN", coadd_years=10).kwargs_single_band()


def moffat_kernel(fwhm: float, beta: float) -> np.ndarray:
    """lenstronomy's Moffat profile integrated over pixels (evaluated MOFFAT_SUB^2 times per pixel)."""
    from lenstronomy.Util import kernel_util

    k = kernel_util.kernel_moffat(MOFFAT_SIZE * MOFFAT_SUB, PIX / MOFFAT_SUB, fwhm, beta)
    k = k.reshape(MOFFAT_SIZE, MOFFAT_SUB, MOFFAT_SIZE, MOFFAT_SUB).sum(axis=(1, 3))
    return kernel_util.kernel_norm(k)


# ---------------------------------------------------------------- populations

def _mags(i: float, g_i: float, r_i: float) -> np.ndarray:
    return np.array([i + g_i, i + r_i, i])


def _sersic(x, y, r, n, q, phi, mags, profile="SERSIC_ELLIPSE"):
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    kw = {"R_sersic": float(r), "n_sersic": float(n), "center_x": float(x), "center_y": float(y)}
    if profile == "SERSIC_ELLIPSE":
        e1, e2 = phi_q2_ellipticity(float(phi), float(q))
        kw.update(e1=float(e1), e2=float(e2))
    return profile, kw, mags


def _blue_colour(rng, lo=0.0, hi=0.6):
    g_i = rng.uniform(lo, hi)
    return g_i, g_i * rng.uniform(0.25, 0.45)


def _red_galaxy(rng, x=0.0, y=0.0):
    """The lens-light population: also every negative's central galaxy, so brightness is no label."""
    return _sersic(x, y, rng.uniform(0.4, 2.0), rng.uniform(2.0, 6.0), rng.uniform(0.5, 1.0),
                   rng.uniform(0, np.pi), _mags(rng.uniform(17.5, 21.0), rng.uniform(1.2, 1.8),
                                                rng.uniform(0.35, 0.55)))


def _psf(rng) -> list[dict]:
    z = np.sqrt(SEEING_CORR) * rng.normal() + np.sqrt(1 - SEEING_CORR) * rng.normal(size=len(BANDS))
    fwhm = [_band_kwargs(b)["seeing"] * float(np.exp(SEEING_SCATTER * zb)) for b, zb in zip(BANDS, z)]
    if rng.random() < 0.5:
        return [{"psf_type": "GAUSSIAN", "seeing": f} for f in fwhm]
    beta = rng.uniform(2.5, 4.5)
    return [{"psf_type": "PIXEL", "seeing": f, "kernel_point_source": moffat_kernel(f, beta)} for f in fwhm]


def _centre(rng):
    return rng.uniform(-0.1, 0.1, size=2)  # sub-pixel jitter of the target


def _field(rng, scene: Scene) -> None:
    """0-2 unrelated neighbours >= 3" from the centre in every kind: clutter position is no label."""
    for _ in range(rng.choice(3, p=[0.55, 0.30, 0.15])):
        while True:
            x, y = rng.uniform(-HALF + 0.2, HALF - 0.2, size=2)
            if np.hypot(x, y) >= 3.0:
                break
        if rng.random() < 0.3:
            g_i = rng.uniform(0.3, 2.8)
            scene.stars.append((float(x), float(y),
                                _mags(rng.uniform(18.0, 23.5), g_i, 0.4 * g_i + rng.normal(0, 0.05))))
        else:
            g_i = rng.uniform(0.2, 1.8)
            scene.light.append(_sersic(x, y, rng.uniform(0.15, 0.8), rng.uniform(0.7, 4.0),
                                       rng.uniform(0.3, 1.0), rng.uniform(0, np.pi),
                                       _mags(rng.uniform(20.0, 24.0), g_i, g_i * rng.uniform(0.25, 0.4))))


def _galaxy(rng, scene: Scene) -> None:
    x, y = _centre(rng)
    bulge = _red_galaxy(rng, x, y)
    scene.light.append(bulge)
    if rng.random() < 0.3:  # a fainter, bluer disc around the elliptical
        g_i = rng.uniform(0.6, 1.0)
        scene.light.append(_sersic(x, y, bulge[1]["R_sersic"] * rng.uniform(1.5, 3.0), 1.0,
                                   rng.uniform(0.3, 0.9), rng.uniform(0, np.pi),
                                   _mags(bulge[2][2] + rng.uniform(0.5, 2.0), g_i, g_i * 0.35)))


def _companion(rng, scene: Scene) -> None:
    _galaxy(rng, scene)
    for _ in range(rng.integers(1, 5)):
        r, t = rng.uniform(0.8, 3.5), rng.uniform(0, 2 * np.pi)
        x, y = r * np.cos(t), r * np.sin(t)
        g_i, r_i = _blue_colour(rng) if rng.random() < 0.7 else _blue_colour(rng, 0.7, 1.6)
        mag = rng.uniform(19.5, 21.5) if rng.random() < 0.25 else rng.uniform(21.5, 25.0)
        if rng.random() < 0.5:  # arc-like: elongated, major axis tangential
            comp = _sersic(x, y, rng.uniform(0.15, 0.5), rng.uniform(0.5, 1.5), rng.uniform(0.15, 0.4),
                           t + np.pi / 2, _mags(mag, g_i, r_i))
        else:
            comp = _sersic(x, y, rng.uniform(0.08, 0.3), rng.uniform(0.5, 2.5), rng.uniform(0.5, 1.0),
                           rng.uniform(0, np.pi), _mags(mag, g_i, r_i))
        scene.light.append(comp)


def _group(rng, scene: Scene) -> None:
    x, y = _centre(rng)
    main = _red_galaxy(rng, x, y)
    scene.light.append(main)
    for _ in range(rng.integers(1, 5)):
        r, t = np.sqrt(rng.uniform(1.0, 16.0)), rng.uniform(0, 2 * np.pi)
        mags = main[2] + rng.uniform(0.3, 2.5) + rng.normal(0, 0.05, size=3)
        scene.light.append(_sersic(x + r * np.cos(t), y + r * np.sin(t), rng.uniform(0.3, 1.2),
                                   rng.uniform(2.0, 5.0), rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), mags))


def _edgeon(rng, scene: Scene) -> None:
    x, y = _centre(rng)
    phi = rng.uniform(0, np.pi)
    g_i = rng.uniform(0.4, 1.0)
    i_disc = rng.uniform(18.0, 21.5)
    scene.light.append(_sersic(x, y, rng.uniform(0.6, 2.0), rng.uniform(0.8, 1.2), rng.uniform(0.1, 0.25),
                               phi, _mags(i_disc, g_i, g_i * rng.uniform(0.3, 0.4))))
    if rng.random() < 0.5:
        scene.light.append(_sersic(x, y, rng.uniform(0.2, 0.5), rng.uniform(3.0, 4.0), rng.uniform(0.7, 1.0),
                                   phi, _mags(i_disc + rng.uniform(0.5, 2.0), rng.uniform(1.1, 1.6),
                                              rng.uniform(0.35, 0.5))))


def _lens(rng, scene: Scene) -> None:
    from lenstronomy.Util.param_util import phi_q2_ellipticity, shear_polar2cartesian

    x, y = _centre(rng)
    light = _red_galaxy(rng, x, y)
    scene.light.append(light)
    theta_e = float(np.exp(rng.uniform(*np.log(THETA_E))))
    phi_l = np.arctan2(light[1]["e2"], light[1]["e1"]) / 2
    e1, e2 = phi_q2_ellipticity(phi_l + rng.normal(0, np.radians(15)), rng.uniform(0.5, 1.0))
    mass = {"theta_E": theta_e, "e1": float(e1), "e2": float(e2), "center_x": float(x), "center_y": float(y)}
    if rng.random() < 0.5:
        scene.mass.append(("EPL", {**mass, "gamma": float(np.clip(rng.normal(2.0, 0.1), 1.7, 2.3))}))
    else:
        scene.mass.append(("SIE", mass))
    g1, g2 = shear_polar2cartesian(rng.uniform(0, np.pi), rng.uniform(0.0, 0.08))
    scene.mass.append(("SHEAR", {"gamma1": float(g1), "gamma2": float(g2), "ra_0": 0.0, "dec_0": 0.0}))
    scene.theta_e = theta_e
    # source within ~the caustic, uniform in area; rendered at a reference magnitude, rescaled later
    r, t = 0.6 * theta_e * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    sx, sy = x + r * np.cos(t), y + r * np.sin(t)
    rs = rng.uniform(0.05, 0.4)
    g_i, r_i = _blue_colour(rng)
    m0 = SRC_MAG_I[0]
    scene.source.append(_sersic(sx, sy, rs, rng.uniform(0.5, 2.5), rng.uniform(0.4, 1.0),
                                rng.uniform(0, np.pi), _mags(m0, g_i, r_i)))
    for _ in range(rng.integers(0, 4)):  # compact star-forming clumps within the source
        cx, cy = sx + rng.normal(0, rs), sy + rng.normal(0, rs)
        cg_i, cr_i = _blue_colour(rng, -0.2, 0.3)
        mags = _mags(m0 + rng.uniform(1.0, 3.0), cg_i, cr_i)
        if rng.random() < 0.5:
            scene.source.append(("GAUSSIAN", {"sigma": float(rng.uniform(0.03, 0.08)), "center_x": float(cx),
                                              "center_y": float(cy)}, mags))
        else:
            scene.source.append(_sersic(cx, cy, rng.uniform(0.03, 0.08), 1.0, 1.0, 0.0, mags, "SERSIC"))


DRAW = {"galaxy": _galaxy, "companion": _companion, "group": _group, "edgeon": _edgeon, "lens": _lens}


# ---------------------------------------------------------------- rendering

def _render(scene: Scene):
    """Noise-free (arc [B,H,W], everything else [B,H,W], the per-band SimAPI objects)."""
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    arcs, rest, sims = [], [], []
    for b, band in enumerate(BANDS):
        model = {"lens_model_list": [p for p, _ in scene.mass],
                 "source_light_model_list": [p for p, _, _ in scene.source],
                 "lens_light_model_list": [p for p, _, _ in scene.light]}
        if scene.stars:
            model["point_source_model_list"] = ["UNLENSED"] * len(scene.stars)
        sim = SimAPI(NPIX, {**_band_kwargs(band), **scene.psf[b]}, model)
        kll, ksrc, kps = sim.magnitude2amplitude(
            [{**kw, "magnitude": m[b]} for _, kw, m in scene.light],
            [{**kw, "magnitude": m[b]} for _, kw, m in scene.source] or None,
            [{"ra_image": [x], "dec_image": [y], "magnitude": [m[b]]} for x, y, m in scene.stars] or None)
        im = sim.image_model_class(NUMERICS)
        kl = [kw for _, kw in scene.mass]
        arcs.append(im.image(kl, ksrc, kll, kps, lens_light_add=False, point_source_add=False)
                    if scene.source else np.zeros((NPIX, NPIX)))
        rest.append(im.image(kl, ksrc, kll, kps, source_add=False))
        sims.append(sim)
    return np.array(arcs), np.array(rest), sims


def _variance(sims, model: np.ndarray) -> np.ndarray:
    return np.array([s.estimate_noise(m) ** 2 for s, m in zip(sims, model)])


def _kinds(n: int, lens_fraction: float, rng) -> np.ndarray:
    """Exact counts (largest remainder), shuffled."""
    n_lens = int(round(n * lens_fraction))
    share = np.array(list(NEGATIVE_MIX.values())) * (n - n_lens)
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: n - n_lens - counts.sum()]] += 1
    kinds = np.repeat(["lens", *NEGATIVE_MIX], [n_lens, *counts])
    return kinds[rng.permutation(n)]


def draw_one(kind: str, rng):
    """(image [3,64,64] float32, theta_e, arc_snr). Lenses below SNR_MIN redraw their source magnitude
    (the arc is linear in it, so no re-render); a geometry that fails 30 magnitudes is redrawn whole."""
    while True:
        scene = Scene(kind, _psf(rng))
        DRAW[kind](rng, scene)
        _field(rng, scene)
        arc, rest, sims = _render(scene)
        snr, scale = 0.0, 1.0
        if kind == "lens":
            bkg = np.array([s.background_noise for s in sims])
            for _ in range(30):
                scale = 10 ** (-0.4 * (rng.uniform(*SRC_MAG_I) - SRC_MAG_I[0]))
                snr = arc_snr(arc * scale, _variance(sims, arc * scale + rest), bkg)
                if snr >= SNR_MIN:
                    break
            else:
                continue
        model = arc * scale + rest
        noise = [s.noise_for_model(m, seed=int(rng.integers(2**31))) for s, m in zip(sims, model)]
        return (model + np.array(noise)).astype(np.float32), scene.theta_e, snr


def draw_systems(n: int, rng, lens_fraction: float = 0.4, on_item=None) -> dict[str, np.ndarray]:
    kinds = _kinds(n, lens_fraction, rng)
    images = np.empty((n, len(BANDS), NPIX, NPIX), np.float32)
    theta_e, snr = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for j, kind in enumerate(kinds):
        images[j], theta_e[j], snr[j] = draw_one(str(kind), rng)
        if on_item is not None:
            on_item(1)
    return {"images": images, "labels": (kinds == "lens").astype(np.int8),
            "kind": np.array([k.encode() for k in kinds], dtype="S9"), "theta_e": theta_e, "arc_snr": snr}


# ---------------------------------------------------------------- writing

def _simulator() -> str:
    import lenstronomy

    return f"lenstronomy {lenstronomy.__version__}"


def _write_shard(out: Path, s: int, lo: int, hi: int, seed: int, lens_fraction: float, on_item=None) -> dict:
    from lenstrt.data.shards import write_shard

    arrays = draw_systems(hi - lo, np.random.default_rng([seed, s]), lens_fraction, on_item)
    arrays["ids"] = np.array([f"xsim-s{seed}-{i:09d}".encode() for i in range(lo, hi)])
    attrs = {"survey": SURVEY, "bands": json.dumps(list(BANDS)), "pixel_scale": PIX, "units": UNITS,
             "seed": seed, "simulator": _simulator(), "shard": s, "first_index": lo,
             "lens_fraction": lens_fraction}
    write_shard(out / f"shard-{s:05d}.h5", arrays, attrs, storage="float32")
    kinds, counts = np.unique(arrays["kind"], return_counts=True)
    return {k.decode(): int(c) for k, c in zip(kinds, counts)}


_DONE = None  # shared count of systems drawn, set in each worker (fork) for the parent's progress bar


def _count(k: int) -> None:
    with _DONE.get_lock():
        _DONE.value += k


def _shard_job(args) -> dict:
    return _write_shard(*args, on_item=_count)


def make(n: int, seed: int, out, lens_fraction: float = 0.4, shard_size: int = 5000, progress: bool = True,
         workers: int = 1) -> dict:
    """Writes DIR/shard-XXXXX.h5 and DIR/dataset.json; returns the dataset.json content. Same arguments,
    same bytes (whatever `workers`): each shard draws from default_rng([seed, shard])."""
    from lenstrt.io import write_json
    from lenstrt.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bounds = [(s, lo, min(n, lo + shard_size)) for s, lo in enumerate(range(0, n, shard_size))]
    names = [f"shard-{s:05d}.h5" for s, _, _ in bounds]
    stale = sorted(p.name for p in out.glob("shard-*.h5") if p.name not in names)
    if stale:  # readers take every .h5 in the directory: a mix of two sets would pass silently
        raise SystemExit(f"{out}: holds shards of another set ({', '.join(stale[:3])}...); use an empty --out")
    totals = dict.fromkeys(KINDS, 0)
    t0 = time.perf_counter()
    with progress_bar("xsim", total=n, unit="systems", enabled=progress) as bar:
        if workers > 1:
            import multiprocessing as mp

            global _DONE
            ctx = mp.get_context("fork")
            _DONE, shown = ctx.Value("q", 0), 0
            jobs = [(out, s, lo, hi, seed, lens_fraction) for s, lo, hi in bounds]
            with ctx.Pool(min(workers, len(jobs))) as pool:
                res = pool.map_async(_shard_job, jobs)
                while not res.ready():
                    res.wait(0.5)
                    done = _DONE.value  # read once: workers keep counting
                    bar.advance(done - shown)
                    shown = done
                bar.advance(_DONE.value - shown)
                for counts in res.get():
                    for kind, c in counts.items():
                        totals[kind] += c
        else:
            for s, lo, hi in bounds:
                for kind, c in _write_shard(out, s, lo, hi, seed, lens_fraction, bar.advance).items():
                    totals[kind] += c
    meta = {"schema": "lenstrt-dataset/1", "n": n, "seed": seed, "survey": SURVEY, "bands": list(BANDS),
            "image_size": NPIX, "pixel_scale": PIX, "lens_fraction": lens_fraction, "kinds": totals,
            "shards": names, "simulator": _simulator(), "units": UNITS, "arc_snr_min": SNR_MIN,
            "generator": "benchmarks/cross_sim.py"}
    write_json(out / "dataset.json", meta)
    meta["seconds"] = round(time.perf_counter() - t0, 1)  # reported, kept out of the file (same bytes)
    return meta


def preview(out, per_kind: int = 8) -> Path:
    """DIR/preview.png: the first `per_kind` cutouts of each kind, one row per kind."""
    from lenstrt.data.readers import load_all
    from lenstrt.plots import gallery

    d = load_all(out, extra=("kind", "arc_snr", "theta_e"))
    rows = [np.flatnonzero(d["kind"] == k.encode())[:per_kind] for k in KINDS]
    idx = np.concatenate(rows)
    titles = [f"lens {d['theta_e'][i]:.1f}\" snr {d['arc_snr'][i]:.0f}" if d["labels"][i]
              else d["kind"][i].decode() for i in idx]
    return gallery(d["images"][idx], titles, Path(out) / "preview.png", ncols=per_kind,
                   suptitle=f"cross-sim ({_simulator()}): {', '.join(KINDS)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--lens-fraction", type=float, default=0.4)
    ap.add_argument("--shard-size", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1, help="processes, one shard each at a time")
    ap.add_argument("--preview", action="store_true", help="also write DIR/preview.png (8 of each kind)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    meta = make(a.n, a.seed, a.out, a.lens_fraction, a.shard_size, not a.no_progress, a.workers)
    if a.preview:
        preview(a.out)
    print(json.dumps({k: meta[k] for k in ("n", "seed", "kinds", "shards", "seconds")}))


if __name__ == "__main__":
    main()
