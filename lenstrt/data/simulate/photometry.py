"""Photometry, PSF and noise: the survey layer caustics does not have.

Units: images are in electrons (e-) per pixel summed over all exposures, sky-subtracted.
- A source of magnitude m in a band with zero point zp gives  F = 10^(-0.4 (m - zp)) * t_total  e-,
  with t_total = exposure_time * n_exposures.
- Sky per pixel: S = 10^(-0.4 (sky_mag - zp)) * pixel_scale^2 * t_total  e-.
- Noise variance per pixel: V = max(model, 0) + S + n_exposures * read_noise^2  (Poisson from source
  and sky, Gaussian read noise), drawn as a Gaussian (counts are large in coadds).
- Sky, depth and PSF vary per cutout and band (population.Observing, psf.py).
- Arc S/N of a lens: `arc_snr` below (the arc's flux where it exceeds 1 sigma of the background).
"""

from __future__ import annotations

import numpy as np
import torch

from lenstrt.data.simulate.presets import Band, Survey


def mag_to_counts(mag: np.ndarray, band: Band) -> np.ndarray:
    return 10.0 ** (-0.4 * (mag - band.zero_point)) * band.total_time


def counts_to_mag(counts: np.ndarray, band: Band) -> np.ndarray:
    return band.zero_point - 2.5 * np.log10(np.maximum(counts, 1e-30) / band.total_time)


def sky_counts(band: Band, pixel_scale: float) -> float:
    return 10.0 ** (-0.4 * (band.sky_mag - band.zero_point)) * pixel_scale**2 * band.total_time


def read_variance(band: Band) -> float:
    return band.n_exposures * band.read_noise**2


def arc_snr(arc: torch.Tensor, base: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The arc S/N of a lens: in each band, the arc's flux in the pixels where the noise-free arc exceeds
    one sigma of the background, over the square root of the summed variance there (arc, lens and
    background); bands in quadrature. arc, base [B, C, H, W] e-; background [B, C] variance (sky + read)."""
    bg = background[..., None, None]
    mask = arc > torch.sqrt(bg)
    var = torch.clamp(base + arc, min=0) + bg
    num = torch.where(mask, arc, torch.zeros_like(arc)).sum(dim=(-1, -2))
    den = torch.sqrt(torch.where(mask, var, torch.zeros_like(var)).sum(dim=(-1, -2)))
    per_band = torch.where(den > 0, num / torch.clamp(den, min=1e-30), torch.zeros_like(num))
    return torch.sqrt((per_band**2).sum(dim=-1))


def background(survey: Survey, sky_scale: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Per-pixel background variance [B, C] (sky + read noise) of cutouts whose sky brightness and
    exposure time are `sky_scale` and `depth` times the preset's."""
    sky = np.array([sky_counts(b, survey.pixel_scale) for b in survey.bands]) * sky_scale * depth
    read = np.array([read_variance(b) for b in survey.bands]) * depth  # more exposures, more reads
    return sky + read


def add_noise(model: np.ndarray, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy sky-subtracted image [B, C, H, W] float32: Poisson from the model and sky, Gaussian read
    noise, all drawn as one Gaussian of variance max(model, 0) + bg (bg [B, C])."""
    var = np.maximum(model, 0) + bg[..., None, None]
    g = torch.Generator().manual_seed(int(rng.integers(2**63)))  # torch's normal sampler is ~2x numpy's here
    noise = torch.randn(model.shape, generator=g).numpy() * np.sqrt(var)
    return (model + noise).astype(np.float32)
