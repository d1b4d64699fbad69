"""Per-cutout, per-band PSFs (Gaussian or Moffat, elliptical, shifted by the band's astrometric offset)
and their convolution. The kernels differ for every cutout and band, so the convolution is one batched
FFT product instead of a shared matrix."""

from __future__ import annotations

import math

import numpy as np
import torch


def kernel_size(fwhm_max: float, pixel_scale: float, image_size: int) -> int:
    """Odd, covering +-4 FWHM (the Moffat wings), never wider than the cutout."""
    k = int(math.ceil(8 * fwhm_max / pixel_scale)) | 1
    return max(3, min(k, image_size - 1 if image_size % 2 == 0 else image_size))


def kernels(fwhm, beta, e, angle, dx, dy, pixel_scale: float, size: int) -> torch.Tensor:
    """[B, C, size, size] kernels summing to 1, sampled at pixel centres. All inputs [B, C] (arcsec,
    radians); beta 0 means Gaussian. Ellipticity e keeps the area: axis ratio (1 - e) / (1 + e)."""
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64))[..., None, None]
         for k, v in dict(fwhm=fwhm, beta=beta, e=e, angle=angle, dx=dx, dy=dy).items()}
    c = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * pixel_scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    x, y = x - t["dx"], y - t["dy"]
    cos, sin = torch.cos(t["angle"]), torch.sin(t["angle"])
    u, v = cos * x + sin * y, -sin * x + cos * y
    q = (1 - t["e"]) / (1 + t["e"])
    r2 = u**2 * q + v**2 / q
    beta = t["beta"]
    moffat = beta > 0
    safe_beta = torch.where(moffat, beta, torch.full_like(beta, 3.0))
    alpha2 = (t["fwhm"] / (2 * torch.sqrt(2 ** (1 / safe_beta) - 1))) ** 2
    sigma2 = (t["fwhm"] / 2.3548200450309493) ** 2
    k = torch.where(moffat, (1 + r2 / alpha2) ** -safe_beta, torch.exp(-0.5 * r2 / sigma2))
    return (k / k.sum(dim=(-1, -2), keepdim=True)).to(torch.float32)


def convolve(images: torch.Tensor, kern: torch.Tensor) -> torch.Tensor:
    """Linear (zero-padded) convolution of [B, C, H, W] images with their own [B, C, K, K] kernels,
    cropped back to H x W. float32: its rounding (~1e-7 of the brightest pixel) is far below the noise."""
    h, w = images.shape[-2:]
    k = kern.shape[-1]
    size = (-(-(h + k - 1) // 16) * 16, -(-(w + k - 1) // 16) * 16)  # FFT-friendly sizes
    spec = torch.fft.rfft2(images, s=size) * torch.fft.rfft2(kern, s=size)
    full = torch.fft.irfft2(spec, s=size)
    half = k // 2
    return full[..., half:half + h, half:half + w].to(images.dtype)
