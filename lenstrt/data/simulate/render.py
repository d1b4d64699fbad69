"""Renders a batch of scenes: caustics ray-traces and evaluates Sersic light, we add the rest of the
sky and the survey.

Each light component is evaluated once with unit intensity on the supersampled grid, pooled to the
survey's pixels, then weighted per band by its flux in that band: geometry is shared by all bands,
colours only change amplitudes. The lensed source is rendered on its own, then scaled so its arc S/N is
the drawn one (the source magnitude follows from the survey's depth, not from a fixed window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lenstrt.data.simulate import artefacts, profiles
from lenstrt.data.simulate import caustics_adapter as ca
from lenstrt.data.simulate import photometry as ph
from lenstrt.data.simulate import psf as psfmod
from lenstrt.data.simulate.population import LENS, Comp, Scene
from lenstrt.data.simulate.presets import Survey


@dataclass
class Rendered:
    images: np.ndarray      # [B, C, H, W] float32, e- per pixel, sky-subtracted, with noise (NaN where masked)
    arc_snr: np.ndarray     # [B] float32 (0 for non-lenses)
    src_mags: np.ndarray    # [B, C] magnitudes of the lensed source's main component (NaN for non-lenses)
    model: np.ndarray | None = None  # [B, C, H, W] noiseless expected counts (when asked for)
    arc: np.ndarray | None = None    # [B, C, H, W] the noiseless lensed source alone, 0 for non-lenses (with the model)


def _grid(survey: Survey) -> tuple[torch.Tensor, torch.Tensor]:
    n = survey.image_size * survey.supersample
    step = survey.pixel_scale / survey.supersample
    c = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * step
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x[None], y[None]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))[:, None, None]


def _pool(profile: torch.Tensor, survey: Survey) -> torch.Tensor:
    """Supersampled unit-intensity profile [B, n, n] -> flux per pixel [B, H, W] (per unit Ie)."""
    ss = survey.supersample
    pooled = F.avg_pool2d(profile[:, None], ss)[:, 0] if ss > 1 else profile
    return pooled * survey.pixel_scale**2


def _unit(comp: Comp, x, y, survey: Survey) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled profile [m, H, W] and its total flux [m], both per unit amplitude."""
    t = _t
    sh = comp.shape
    if comp.profile == "sersic":
        prof = ca.sersic(x, y, t(comp.x), t(comp.y), t(comp.q), t(comp.phi), t(sh["n"]), t(comp.size))
        total = ca.sersic_total_flux_per_ie(t(comp.q)[:, 0, 0], t(sh["n"])[:, 0, 0], t(comp.size)[:, 0, 0])
        return _pool(prof, survey), total
    if comp.profile == "ring":
        prof = profiles.ring(x, y, t(comp.x), t(comp.y), t(comp.q), t(comp.phi), t(comp.size), t(sh["width"]))
    elif comp.profile == "spiral":
        prof = profiles.spiral(x, y, t(comp.x), t(comp.y), t(comp.q), t(comp.phi), t(comp.size), t(sh["arms"]),
                               t(sh["pitch"]), t(sh["phase"]), t(sh["contrast"]))
    elif comp.profile == "tail":
        prof = profiles.tail(x, y, t(comp.x), t(comp.y), t(comp.size), t(comp.phi), t(sh["span"]), t(sh["width"]))
    else:
        raise ValueError(f"unknown profile {comp.profile!r}")
    pooled = _pool(prof, survey)
    return pooled, torch.clamp(pooled.sum(dim=(-1, -2)), min=1e-12)  # the light inside the cutout


def _counts(mags: np.ndarray, survey: Survey, depth: np.ndarray) -> torch.Tensor:
    """[m, C] magnitudes -> e- for cutouts observed `depth` [m, C] times the preset's exposure."""
    cols = [ph.mag_to_counts(mags[..., c], band) for c, band in enumerate(survey.bands)]
    return torch.as_tensor((np.stack(cols, -1) * depth).astype(np.float32))


def _scale_to_snr(arc: torch.Tensor, base: torch.Tensor, bg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per lens, the factor that gives its arc the target S/N. The S/N grows a little faster than the flux
    (the 1-sigma mask widens) and jumps where pixels cross it: a few multiplicative steps settle most;
    the rest are bisected in log scale (the S/N rises with the scale)."""
    snr_of = lambda sc, i: ph.arc_snr(arc[i] * sc[:, None, None, None], base[i], bg[i])  # noqa: E731
    everyone = torch.arange(len(target))
    scale = torch.ones(len(target))
    for _ in range(4):
        snr = snr_of(scale, everyone)
        scale = scale * torch.where(snr > 0, target / torch.clamp(snr, min=1e-6), torch.full_like(snr, 4.0))
    off = torch.nonzero((snr_of(scale, everyone) / target - 1).abs() > 0.005).squeeze(1)
    if len(off):
        lo, hi = torch.log(scale[off]) - 5, torch.log(scale[off]) + 5
        for _ in range(30):
            mid = (lo + hi) / 2
            low = snr_of(torch.exp(mid), off) < target[off]
            lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
        scale[off] = torch.exp(hi)
    return scale


def _scatter_add(target: torch.Tensor, rows: np.ndarray, values: torch.Tensor) -> None:
    """target[rows] += values with repeated rows (companions, knots) adding up. One indexed add per
    repetition rank: torch's index_add_ is ~10x slower on a CPU."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    first = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
    for k in range(int(rank.max(initial=-1)) + 1):
        sel = np.flatnonzero(rank == k)
        target[torch.as_tensor(rows[sel])] += values[torch.as_tensor(sel)]


@torch.inference_mode()
def render(s: Scene, survey: Survey, rng: np.random.Generator, keep_model: bool = False) -> Rendered:
    x, y = _grid(survey)
    b, nb, hw = len(s.kind), len(survey.bands), survey.image_size
    obs = s.obs
    lens = np.flatnonzero(s.kind == LENS)
    slot = np.full(b, -1)
    slot[lens] = np.arange(len(lens))
    light = torch.zeros(b, nb, hw, hw)      # everything but the lensed source, before the PSF
    arc = torch.zeros(len(lens), nb, hw, hw)
    if len(lens):
        sel = lambda a: _t(a[lens])  # noqa: E731
        bx, by = ca.raytrace_sie_shear(x, y, sel(s.lens_x), sel(s.lens_y), sel(s.mass_q), sel(s.mass_phi),
                                       sel(s.theta_e), sel(s.gamma1), sel(s.gamma2))
    src_main = None
    for comp in s.comps:
        if comp.layer == "source":
            idx = torch.as_tensor(slot[comp.rows])
            unit, total = _unit(comp, bx[idx], by[idx], survey)
        else:
            unit, total = _unit(comp, x, y, survey)
        flux = unit[:, None] * (_counts(comp.mags, survey, obs.depth[comp.rows]) / total[:, None])[:, :, None, None]
        if comp.layer == "source":
            _scatter_add(arc, idx.numpy(), flux)
            src_main = comp if src_main is None else src_main
        else:
            _scatter_add(light, comp.rows, flux)
    star_counts = _counts(s.stars.mags, survey, obs.depth[s.stars.rows])
    artefacts.deposit_stars(light, s.stars, star_counts, survey.pixel_scale)

    size = psfmod.kernel_size(float(obs.fwhm.max()), survey.pixel_scale, hw)
    kern = psfmod.kernels(obs.fwhm, obs.beta, obs.e, obs.e_angle, obs.dx, obs.dy, survey.pixel_scale, size)
    model = psfmod.convolve(light, kern)
    artefacts.spikes(model, s.stars, star_counts, survey.pixel_scale)
    bg = ph.background(survey, obs.sky_scale, obs.depth)

    arc_snr = np.zeros(b, dtype=np.float32)
    src_mags = np.full((b, nb), np.nan)
    if len(lens):
        arc = psfmod.convolve(arc, kern[lens])
        base, bgl = model[lens], torch.as_tensor(bg[lens], dtype=torch.float32)
        target = torch.as_tensor(s.target_snr[lens], dtype=torch.float32)
        scale = _scale_to_snr(arc, base, bgl, target)
        arc = arc * scale[:, None, None, None]
        arc_snr[lens] = ph.arc_snr(arc, base, bgl).numpy()
        model[lens] = base + arc
        if src_main is not None:
            src_mags[src_main.rows] = src_main.mags - 2.5 * np.log10(scale.numpy()[slot[src_main.rows]])[:, None]

    model_np = model.numpy()
    arc_np = None
    if keep_model:
        arc_np = np.zeros_like(model_np)
        arc_np[lens] = arc.numpy()
    images = ph.add_noise(model_np, bg, rng)
    images += (obs.sky_residual * np.sqrt(bg))[..., None, None].astype(np.float32)
    artefacts.saturate(images, s.stars, model_np, rng, survey.pixel_scale)
    artefacts.cosmic_rays(images, obs, bg, rng)
    artefacts.mask_regions(images, obs, rng)
    return Rendered(images=images, arc_snr=arc_snr, src_mags=src_mags.astype(np.float32),
                    model=model_np if keep_model else None, arc=arc_np)
