"""The one module that talks to caustics (pinned: caustics==1.7.1).

caustics' functional API (`caustics.func`) takes plain tensors and broadcasts, so a whole batch of
systems is ray-traced in one call: parameters shaped [B, 1, 1] against a grid shaped [1, H, W].
Conventions (caustics 1.x): angles in radians from the +x axis; Sersic radius `Re` is the semi-major
axis and the ellipse is r^2 = x'^2 + (y'/q)^2; SIE `Rein` is b/sqrt(q) in Keeton (2002) notation.
"""

from __future__ import annotations

import math

import torch
from caustics import func as cf


def sersic_k(n: torch.Tensor) -> torch.Tensor:
    return cf.k_sersic(n)


def sersic(x: torch.Tensor, y: torch.Tensor, x0, y0, q, phi, n, re) -> torch.Tensor:
    """Sersic surface brightness with unit intensity at the effective radius."""
    return cf.brightness_sersic(x0, y0, q, phi, n, re, torch.ones_like(re), x, y, sersic_k(n))


def sersic_total_flux_per_ie(q: torch.Tensor, n: torch.Tensor, re: torch.Tensor) -> torch.Tensor:
    """Integral of `sersic` over the plane (arcsec^2): 2 pi n q Re^2 e^k k^(-2n) Gamma(2n)."""
    k = sersic_k(n)
    log_total = (
        math.log(2 * math.pi) + torch.log(n) + torch.log(q) + 2 * torch.log(re)
        + k - 2 * n * torch.log(k) + torch.lgamma(2 * n)
    )
    return torch.exp(log_total)


def raytrace_sie_shear(x, y, x0, y0, q, phi, theta_e, gamma1, gamma2):
    """Source-plane positions of image-plane points through an SIE plus external shear."""
    ax, ay = cf.reduced_deflection_angle_sie(x0, y0, q, phi, theta_e, x, y)
    sx, sy = cf.reduced_deflection_angle_external_shear(x0, y0, gamma1, gamma2, x, y)
    return x - ax - sx, y - ay - sy
