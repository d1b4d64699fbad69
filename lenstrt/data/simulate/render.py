"""Renders a batch of systems: caustics ray-traces and evaluates the light, we add the survey.

Each light component is evaluated once on the supersampled grid with unit intensity, pooled to the
survey's pixels, and then weighted per band by its flux in that band: geometry is shared by all
bands, colours only change amplitudes. That keeps a multi-band batch nearly as cheap as one band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lenstrt.data.simulate import caustics_adapter as ca
from lenstrt.data.simulate import photometry as ph
from lenstrt.data.simulate.population import Params
from lenstrt.data.simulate.presets import Survey


@dataclass
class Rendered:
    images: np.ndarray      # [B, C, H, W] float32, e- per pixel, sky-subtracted, with noise
    arc_snr: np.ndarray     # [B] float32 (0 for non-lenses)
    src_mags: np.ndarray    # [B, C] magnitudes after the S/N floor (NaN for non-lenses)
    model: np.ndarray | None = None  # [B, C, H, W] noiseless expected counts (when asked for)


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


def _sersic_unit(x, y, x0, y0, q, phi, n, re, survey: Survey) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled profile per unit Ie, and total flux per unit Ie (to convert magnitudes to Ie)."""
    prof = ca.sersic(x, y, _t(x0), _t(y0), _t(q), _t(phi), _t(n), _t(re))
    total = ca.sersic_total_flux_per_ie(_t(q)[:, 0, 0], _t(n)[:, 0, 0], _t(re)[:, 0, 0])
    return _pool(prof, survey), total


def _counts(mags: np.ndarray, survey: Survey) -> torch.Tensor:
    cols = [ph.mag_to_counts(mags[..., c], band) for c, band in enumerate(survey.bands)]
    return torch.as_tensor(np.stack(cols, -1).astype(np.float32))


def _band_sum(unit: torch.Tensor, counts: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """unit [B,H,W], counts [B,C], total [B] -> [B,C,H,W]."""
    return unit[:, None] * (counts / total[:, None])[:, :, None, None]


@torch.inference_mode()
def render(p: Params, survey: Survey, rng: np.random.Generator, kernels: torch.Tensor,
           keep_model: bool = False) -> Rendered:
    x, y = _grid(survey)
    b, nb, hw = len(p.kind), len(survey.bands), survey.image_size
    model = torch.zeros(b, nb, hw, hw)

    unit, total = _sersic_unit(x, y, p.lens_x, p.lens_y, p.lens_q, p.lens_phi, p.lens_n, p.lens_re, survey)
    model += _band_sum(unit, _counts(p.lens_mags, survey), total)

    # PSF convolution is linear: convolve each component once, on the systems that have it.
    model = ph.convolve_psf(model, kernels)
    src_mags = np.full_like(p.src_mags, np.nan)
    arc_snr = np.zeros(b, dtype=np.float32)
    lens = np.flatnonzero(p.kind == 1)
    if lens.size:
        sel = lambda a: a[lens]  # noqa: E731
        bx, by = ca.raytrace_sie_shear(
            x, y, _t(sel(p.lens_x)), _t(sel(p.lens_y)), _t(sel(p.mass_q)), _t(sel(p.mass_phi)),
            _t(sel(p.theta_e)), _t(sel(p.gamma1)), _t(sel(p.gamma2)),
        )
        prof = ca.sersic(bx, by, _t(sel(p.src_x)) + _t(sel(p.lens_x)), _t(sel(p.src_y)) + _t(sel(p.lens_y)),
                         _t(sel(p.src_q)), _t(sel(p.src_phi)), _t(sel(p.src_n)), _t(sel(p.src_re)))
        total_s = ca.sersic_total_flux_per_ie(_t(sel(p.src_q))[:, 0, 0], _t(sel(p.src_n))[:, 0, 0],
                                              _t(sel(p.src_re))[:, 0, 0])
        arc = ph.convolve_psf(_band_sum(_pool(prof, survey), _counts(sel(p.src_mags), survey), total_s), kernels)
        base = model[lens]
        snr = _arc_snr(arc, base, survey)
        # Floor the arc S/N: a "lens" nobody could see is label noise, not a hard example.
        boost = torch.clamp(survey.population.min_arc_snr / torch.clamp(snr, min=1e-6), min=1.0)
        arc = arc * boost[:, None, None, None]
        src_mags[lens] = p.src_mags[lens] - 2.5 * np.log10(boost.numpy()[:, None])
        arc_snr[lens] = _arc_snr(arc, base, survey).numpy()
        model[lens] = base + arc

    comp = np.flatnonzero(p.kind == 2)
    if comp.size:
        extra = torch.zeros(comp.size, nb, hw, hw)
        for k in range(p.comp_on.shape[1]):
            on = p.comp_on[comp, k]
            if not on.any():
                continue
            idx = comp[on]
            u, tot = _sersic_unit(x, y, p.comp_x[idx, k] + p.lens_x[idx], p.comp_y[idx, k] + p.lens_y[idx],
                                  p.comp_q[idx, k], p.comp_phi[idx, k], p.comp_n[idx, k], p.comp_re[idx, k], survey)
            extra[torch.as_tensor(np.flatnonzero(on))] += _band_sum(u, _counts(p.comp_mags[idx, k], survey), tot)
        model[comp] += ph.convolve_psf(extra, kernels)

    images, _ = ph.add_noise(model.numpy(), survey, rng)
    return Rendered(images=images, arc_snr=arc_snr, src_mags=src_mags, model=model.numpy() if keep_model else None)


def _arc_snr(arc: torch.Tensor, base: torch.Tensor, survey: Survey) -> torch.Tensor:
    snrs = []
    for c, band in enumerate(survey.bands):
        var = torch.clamp(base[:, c] + arc[:, c], min=0) + ph.sky_counts(band, survey.pixel_scale) + ph.read_variance(band)
        snrs.append(torch.sqrt((arc[:, c] ** 2 / var).sum(dim=(-1, -2))))
    return torch.stack(snrs, -1).amax(-1)
