"""Draws the parameters of a batch of systems (lenses, plain galaxies, galaxies with companions).

Everything random comes from one numpy Generator, so a (seed, shard) pair fixes every byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lenstrt.data.simulate.presets import Survey

KINDS = ("galaxy", "lens", "companion")  # kind codes 0, 1, 2
MAX_COMPANIONS = 3


@dataclass
class Params:
    kind: np.ndarray          # [B] int8 (index into KINDS)
    # lens galaxy light (every system has one)
    lens_x: np.ndarray
    lens_y: np.ndarray
    lens_q: np.ndarray
    lens_phi: np.ndarray
    lens_n: np.ndarray
    lens_re: np.ndarray
    lens_mags: np.ndarray     # [B, C]
    # mass and source (meaningful where kind == lens)
    theta_e: np.ndarray
    mass_q: np.ndarray
    mass_phi: np.ndarray
    gamma1: np.ndarray
    gamma2: np.ndarray
    src_x: np.ndarray
    src_y: np.ndarray
    src_q: np.ndarray
    src_phi: np.ndarray
    src_n: np.ndarray
    src_re: np.ndarray
    src_mags: np.ndarray      # [B, C]
    # companions (kind == companion): up to MAX_COMPANIONS, flux 0 where absent
    comp_x: np.ndarray        # [B, K]
    comp_y: np.ndarray
    comp_q: np.ndarray
    comp_phi: np.ndarray
    comp_n: np.ndarray
    comp_re: np.ndarray
    comp_mags: np.ndarray     # [B, K, C]
    comp_on: np.ndarray       # [B, K] bool


def _colors(survey: Survey, table: dict[str, float], rng: np.random.Generator, shape) -> np.ndarray:
    base = np.array([table.get(b, 0.0) for b in survey.band_names])
    scatter = survey.population.color_scatter * rng.standard_normal(shape + (len(base),))
    ref = survey.band_names.index(survey.reference_band)
    scatter[..., ref] = 0.0
    return base + scatter


def sample(survey: Survey, kinds: np.ndarray, rng: np.random.Generator) -> Params:
    pop = survey.population
    b = len(kinds)
    u = rng.uniform
    lens_phi = u(0, np.pi, b)
    lens_ref = u(*pop.lens_mag, b)
    theta_e = u(*pop.theta_e, b)
    # Source inside ~the caustic region so most lenses show arcs or rings.
    r_src = theta_e * np.sqrt(u(0, 1, b)) * 0.5
    a_src = u(0, 2 * np.pi, b)
    src_ref = u(*pop.source_mag, b)
    # Companions: 1-3 compact blue galaxies 1.2-3.2" away; half are elongated and tangential so they
    # look like arcs (the hard negatives where false positives come from).
    k = MAX_COMPANIONS
    n_comp = rng.integers(1, k + 1, b)
    comp_on = (np.arange(k)[None, :] < n_comp[:, None]) & (kinds == 2)[:, None]
    comp_r = u(1.2, 3.2, (b, k))
    comp_a = u(0, 2 * np.pi, (b, k))
    tangential = u(0, 1, (b, k)) < 0.5
    comp_phi = np.where(tangential, comp_a + np.pi / 2, u(0, np.pi, (b, k)))
    comp_q = np.where(tangential, u(0.2, 0.5, (b, k)), u(0.5, 1.0, (b, k)))
    comp_ref = u(*pop.companion_mag, (b, k))
    return Params(
        kind=kinds.astype(np.int8),
        lens_x=rng.normal(0, 0.1, b), lens_y=rng.normal(0, 0.1, b),
        lens_q=u(0.6, 1.0, b), lens_phi=lens_phi, lens_n=u(2.5, 5.0, b), lens_re=u(0.5, 1.6, b),
        lens_mags=lens_ref[:, None] + _colors(survey, pop.lens_colors, rng, (b,)),
        theta_e=theta_e, mass_q=u(0.6, 1.0, b), mass_phi=lens_phi + rng.normal(0, 0.2, b),
        gamma1=rng.normal(0, 0.03, b), gamma2=rng.normal(0, 0.03, b),
        src_x=r_src * np.cos(a_src), src_y=r_src * np.sin(a_src),
        src_q=u(0.4, 1.0, b), src_phi=u(0, np.pi, b), src_n=u(0.7, 2.0, b), src_re=u(0.1, 0.45, b),
        src_mags=src_ref[:, None] + _colors(survey, pop.source_colors, rng, (b,)),
        comp_x=comp_r * np.cos(comp_a), comp_y=comp_r * np.sin(comp_a),
        comp_q=comp_q, comp_phi=comp_phi, comp_n=u(0.7, 1.5, (b, k)), comp_re=u(0.15, 0.5, (b, k)),
        comp_mags=comp_ref[..., None] + _colors(survey, pop.source_colors, rng, (b, k)),
        comp_on=comp_on,
    )
