"""Photometry, PSF and noise: the survey layer caustics does not have.

Units: images are in electrons (e-) per pixel summed over all exposures, sky-subtracted.
- A source of magnitude m in a band with zero point zp gives  F = 10^(-0.4 (m - zp)) * t_total  e-,
  with t_total = exposure_time * n_exposures.
- Sky per pixel: S = 10^(-0.4 (sky_mag - zp)) * pixel_scale^2 * t_total  e-.
- Noise variance per pixel: V = max(model, 0) + S + n_exposures * read_noise^2  (Poisson from source
  and sky, Gaussian read noise), drawn as a Gaussian (counts are large in coadds).
- PSF: a circular Gaussian of FWHM `seeing` (sigma = FWHM / 2.3548), applied at the final pixel scale.
- Arc S/N of a lens: sqrt(sum over pixels of arc^2 / V) in the band where it is largest, i.e. the
  matched-filter S/N of the lensed source alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lenstrt.data.simulate.presets import Band, Survey


def mag_to_counts(mag: np.ndarray, band: Band) -> np.ndarray:
    return 10.0 ** (-0.4 * (mag - band.zero_point)) * band.total_time


def counts_to_mag(counts: np.ndarray, band: Band) -> np.ndarray:
    return band.zero_point - 2.5 * np.log10(np.maximum(counts, 1e-30) / band.total_time)


def sky_counts(band: Band, pixel_scale: float) -> float:
    return 10.0 ** (-0.4 * (band.sky_mag - band.zero_point)) * pixel_scale**2 * band.total_time


def read_variance(band: Band) -> float:
    return band.n_exposures * band.read_noise**2


def psf_kernels(survey: Survey) -> torch.Tensor:
    """[C, 1, K] normalised 1-D Gaussians, one per band (same K for all bands). A circular Gaussian is
    separable, so the 2-D PSF is applied as two 1-D passes: K times cheaper than a K x K kernel."""
    sigmas = [b.seeing / 2.3548 / survey.pixel_scale for b in survey.bands]
    half = max(1, int(math.ceil(4 * max(sigmas))))
    r = torch.arange(-half, half + 1, dtype=torch.float64)
    ker = [torch.exp(-0.5 * (r / s) ** 2) for s in sigmas]
    return torch.stack([k / k.sum() for k in ker])[:, None].to(torch.float32)


def convolve_psf(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    pad = kernels.shape[-1] // 2
    c = images.shape[1]
    out = F.conv2d(images, kernels[..., None], padding=(pad, 0), groups=c)
    return F.conv2d(out, kernels[:, :, None, :], padding=(0, pad), groups=c)


def add_noise(model: np.ndarray, survey: Survey, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns (noisy sky-subtracted image, variance), both [B, C, H, W] float32."""
    var = np.empty_like(model)
    for c, band in enumerate(survey.bands):
        var[:, c] = np.maximum(model[:, c], 0) + sky_counts(band, survey.pixel_scale) + read_variance(band)
    noise = rng.standard_normal(model.shape, dtype=np.float32) * np.sqrt(var)
    return (model + noise).astype(np.float32), var
