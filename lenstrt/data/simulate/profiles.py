"""Light profiles caustics does not have: rings, spiral discs, tidal tails. Each takes the grid [1, n, n]
(arcsec) and parameters [m, 1, 1] and returns unnormalised surface brightness [m, n, n]; render.py
normalises them numerically (they have no closed-form total)."""

from __future__ import annotations

import math

import torch


def _frame(x, y, x0, y0, q, phi):
    """Coordinates along the major axis and (deprojected) minor axis."""
    dx, dy = x - x0, y - y0
    c, s = torch.cos(phi), torch.sin(phi)
    return c * dx + s * dy, (-s * dx + c * dy) / q


def ring(x, y, x0, y0, q, phi, radius, width):
    u, v = _frame(x, y, x0, y0, q, phi)
    return torch.exp(-0.5 * ((torch.sqrt(u**2 + v**2) - radius) / width) ** 2)


def spiral(x, y, x0, y0, q, phi, h, arms, pitch, phase, contrast):
    """Exponential disc whose light is concentrated in logarithmic arms (angle = ln r / tan(pitch))."""
    u, v = _frame(x, y, x0, y0, q, phi)
    r = torch.sqrt(u**2 + v**2) + 1e-3
    theta = torch.atan2(v, u)
    arm = (0.5 * (1 + torch.cos(arms * (theta - torch.log(r) / torch.tan(pitch)) - phase))) ** contrast
    return torch.exp(-r / h) * (0.2 + arm)


def tail(x, y, x0, y0, radius, start, span, width):
    """A curved tidal tail: part of a circle of `radius` around its host (x0, y0), starting at angle
    `start`, `span` radians long, fading along its length."""
    dx, dy = x - x0, y - y0
    rho = torch.sqrt(dx**2 + dy**2)
    t = torch.remainder(torch.atan2(dy, dx) - start, 2 * math.pi) / span
    along = torch.where(t <= 1, torch.exp(-2 * t) * (1 - torch.exp(-20 * t)), torch.zeros_like(t))
    return torch.exp(-0.5 * ((rho - radius) / width) ** 2) * along
