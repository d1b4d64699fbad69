"""What a survey pipeline leaves in a cutout: saturated stars (flat cores, diffraction spikes, bleed
trails), cosmic-ray residuals, masked regions (NaN or zero). Applied to noisy images in place."""

from __future__ import annotations

import numpy as np
import torch

from lenstrt.data.simulate.population import Observing, Stars


def _pixel(v: np.ndarray, size: int, pixel_scale: float) -> np.ndarray:
    return v / pixel_scale + (size - 1) / 2


def deposit_stars(layer: torch.Tensor, stars: Stars, counts: torch.Tensor, pixel_scale: float) -> None:
    """Point sources into a pre-PSF layer [B, C, H, W] (bilinear, so sub-pixel positions survive the PSF)."""
    n = layer.shape[-1]
    px, py = _pixel(stars.x, n, pixel_scale), _pixel(stars.y, n, pixel_scale)
    i0, j0 = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = py - i0, px - j0
    for di, dj, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        i, j = i0 + di, j0 + dj
        ok = (i >= 0) & (i < n) & (j >= 0) & (j < n)
        for s in np.flatnonzero(ok):
            layer[stars.rows[s], :, i[s], j[s]] += counts[s] * float(w[s])


def spikes(model: torch.Tensor, stars: Stars, counts: torch.Tensor, pixel_scale: float) -> None:
    """Diffraction spikes of the saturated stars: four thin lines fading with distance."""
    n = model.shape[-1]
    c = torch.arange(n, dtype=torch.float32)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    for s in np.flatnonzero(stars.saturated):
        px, py = _pixel(stars.x[s], n, pixel_scale), _pixel(stars.y[s], n, pixel_scale)
        a = float(stars.spike_angle[s])
        u = (xx - px) * np.cos(a) + (yy - py) * np.sin(a)
        v = -(xx - px) * np.sin(a) + (yy - py) * np.cos(a)
        length = float(stars.spike_length[s])
        shape = (torch.exp(-u.abs() / length) * torch.exp(-0.5 * (v / 0.6) ** 2)
                 + torch.exp(-v.abs() / length) * torch.exp(-0.5 * (u / 0.6) ** 2))
        model[stars.rows[s]] += 2e-3 * counts[s][:, None, None] * shape


def saturate(images: np.ndarray, stars: Stars, model: np.ndarray, rng: np.random.Generator, pixel_scale: float) -> None:
    """Flat cores at a saturation level below each saturated star's peak, and a bleed trail along its column."""
    n = images.shape[-1]
    for s in np.flatnonzero(stars.saturated):
        r = stars.rows[s]
        i, j = int(round(_pixel(stars.y[s], n, pixel_scale))), int(round(_pixel(stars.x[s], n, pixel_scale)))
        for c in range(images.shape[1]):
            level = 0.3 * float(model[r, c, min(max(i, 0), n - 1), min(max(j, 0), n - 1)])
            if level <= 0:
                continue
            np.minimum(images[r, c], level, out=images[r, c])
            half = int(rng.integers(2, 12))
            if 0 <= j < n:
                images[r, c, max(i - half, 0):min(i + half + 1, n), j] = level


def cosmic_rays(images: np.ndarray, obs: Observing, bg: np.ndarray, rng: np.random.Generator) -> None:
    """Residual cosmic-ray tracks in one band (a coadd rejects most, not all)."""
    n = images.shape[-1]
    for r in np.flatnonzero(obs.cosmic):
        c = int(rng.integers(images.shape[1]))
        for _ in range(int(rng.integers(1, 4))):
            length, a = rng.uniform(2, 12), rng.uniform(0, np.pi)
            y0, x0 = rng.uniform(0, n, 2)
            t = np.linspace(0, length, int(length) * 2 + 1)
            ii = np.clip((y0 + t * np.sin(a)).astype(int), 0, n - 1)
            jj = np.clip((x0 + t * np.cos(a)).astype(int), 0, n - 1)
            images[r, c, ii, jj] += rng.uniform(20, 200) * np.sqrt(bg[r, c])


def mask_regions(images: np.ndarray, obs: Observing, rng: np.random.Generator) -> None:
    """Masked pixels as surveys deliver them: NaN (no data) or zero, in an edge strip, a box or a bad
    column, in one band or all."""
    n = images.shape[-1]
    for r in np.flatnonzero(obs.masked):
        value = np.nan if rng.uniform() < 0.5 else 0.0
        bands = slice(None) if rng.uniform() < 0.5 else int(rng.integers(images.shape[1]))
        what = rng.integers(3)
        if what == 0:  # an edge strip (chip or tile edge)
            w = int(rng.integers(3, 17))
            side = int(rng.integers(4))
            sl = [(slice(0, w), slice(None)), (slice(n - w, n), slice(None)),
                  (slice(None), slice(0, w)), (slice(None), slice(n - w, n))][side]
        elif what == 1:  # a box
            h, w = rng.integers(4, 21, 2)
            i, j = rng.integers(0, n - h), rng.integers(0, n - w)
            sl = (slice(i, i + h), slice(j, j + w))
        else:  # a bad column
            j = int(rng.integers(n))
            sl = (slice(None), slice(j, j + int(rng.integers(1, 4))))
        images[r, bands][..., sl[0], sl[1]] = value
