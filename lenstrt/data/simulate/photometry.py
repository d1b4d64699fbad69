"""Photometry, PSF and noise: the survey layer caustics does not have.

Units: images are in electrons (e-) per pixel summed over all exposures, sky-subtracted.
- A source of magnitude m in a band with zero point zp gives  F = 10^(-0.4 (m - zp)) * t_total  e-,
  with t_total = exposure_time * n_exposures.
- Sky per pixel: S = 10^(-0.4 (sky_mag - zp)) * pixel_scale^2 * t_total  e-.
- Noise variance per pixel: V = max(model, 0) + S + n_exposures * read_noise^2  (Poisson from source
  and sky, Gaussian read noise), drawn as a Gaussian (counts are large in coadds).
- PSF: a circular Gaussian of FWHM `seeing` (sigma = FWHM / 2.3548, truncated at 4 sigma), applied at
  the final pixel scale.
- Arc S/N of a lens: sqrt(sum over pixels of arc^2 / V) in the band where it is largest, i.e. the
  matched-filter S/N of the lensed source alone.
"""

from __future__ import annotations

import math

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


def psf_kernels(survey: Survey) -> torch.Tensor:
    """The PSF as [C, N, N] banded matrices A (N = image size), one per band: a circular Gaussian is
    separable, so convolving an image X (zero padding) is A X A^T. Two small matrix products per
    image measured 3x faster here than two depthwise 1-D convolutions."""
    sigmas = [b.seeing / 2.3548 / survey.pixel_scale for b in survey.bands]
    half = max(1, int(math.ceil(4 * max(sigmas))))
    n = survey.image_size
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # j - i
    mats = []
    for s in sigmas:
        r = torch.arange(-half, half + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (r / s) ** 2)
        k = k / k.sum()
        a = torch.where(offset.abs() <= half, k[(offset + half).clamp(0, 2 * half)], torch.zeros((), dtype=k.dtype))
        mats.append(a)
    return torch.stack(mats).to(torch.float32)


def convolve_psf(images: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    return torch.einsum("cij,bcjk,clk->bcil", mats, images, mats)


def add_noise(model: np.ndarray, survey: Survey, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns (noisy sky-subtracted image, variance), both [B, C, H, W] float32."""
    var = np.empty_like(model)
    for c, band in enumerate(survey.bands):
        var[:, c] = np.maximum(model[:, c], 0) + sky_counts(band, survey.pixel_scale) + read_variance(band)
    g = torch.Generator().manual_seed(int(rng.integers(2**63)))  # torch's normal sampler is ~2x numpy's here
    noise = torch.randn(model.shape, generator=g).numpy() * np.sqrt(var)
    return (model + noise).astype(np.float32), var
