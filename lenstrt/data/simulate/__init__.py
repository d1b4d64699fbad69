"""`lenstrt simulate`: physically simulated lens / non-lens cutouts in HDF5 shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenstrt import __version__
from lenstrt.data.simulate.population import KINDS, LENS, NEGATIVES, sample
from lenstrt.data.simulate.presets import Survey, load_survey

RENDER_BATCH = 256


@dataclass(frozen=True)
class SimSpec:
    n: int
    seed: int = 0
    survey: str = "lsst-gri"
    shard_size: int = 10_000
    lens_fraction: float = 0.5
    companion_fraction: float | None = None  # of the non-lenses; the other kinds keep their proportions
    image_size: int | None = None
    storage: str = "float32"          # float32 | float16 | zstd | float16-zstd (data/shards.py)
    negative_mix: tuple[tuple[str, float], ...] | None = None  # kind -> weight; the preset's when None


def negative_mix(survey: Survey, mix=None, companion_fraction: float | None = None) -> dict[str, float]:
    """The non-lens kinds and their shares (summing to 1): `mix` (kind -> weight) or the preset's, then
    the companion share set to `companion_fraction` if given."""
    from lenstrt.errors import ConfigError

    w = dict(mix) if mix else dict(survey.population.negative_mix)
    bad = set(w) - set(NEGATIVES)
    if bad or any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ConfigError(f"negative mix {w}: kinds must be among {', '.join(NEGATIVES)} with non-negative "
                          "weights and a positive total (e.g. --negative-mix companion=0.4,ring=0.2,galaxy=0.4)")
    total = sum(w.values())
    w = {k: v / total for k, v in w.items() if v > 0}
    if companion_fraction is not None:
        rest = {k: v for k, v in w.items() if k != "companion"}
        norm = sum(rest.values())
        if not rest and companion_fraction < 1:
            rest, norm = {"galaxy": 1.0}, 1.0
        w = {k: (1 - companion_fraction) * v / norm for k, v in rest.items()}
        w["companion"] = companion_fraction
        w = {k: v for k, v in w.items() if v > 0}
    return w


def draw_kinds(n: int, rng: np.random.Generator, lens_fraction: float, mix: dict[str, float]) -> np.ndarray:
    names = list(mix)
    neg = np.array([KINDS.index(k) for k in names])
    other = neg[rng.choice(len(names), n, p=np.array([mix[k] for k in names]))]
    return np.where(rng.uniform(0, 1, n) < lens_fraction, LENS, other).astype(np.int8)


def simulate_arrays(survey: Survey, n: int, rng: np.random.Generator, lens_fraction: float = 0.5,
                    companion_fraction: float | None = None, on_batch=None, mix=None,
                    simple: bool = False, filled: bool = False) -> dict[str, np.ndarray]:
    """n systems as the arrays of a shard (no ids). The core used by shards and on-the-fly training.
    `simple`: one Sersic each, no nuisances (population.sample). `filled`: masked (NaN) pixels filled as
    every reader fills them, for callers that feed a model directly; shards keep the NaN."""
    from lenstrt.data.simulate.render import render

    kinds = draw_kinds(n, rng, lens_fraction, negative_mix(survey, mix, companion_fraction))
    ref = survey.band_names.index(survey.reference_band)
    parts = []
    for start in range(0, n, RENDER_BATCH):
        k = kinds[start:start + RENDER_BATCH]
        scene = sample(survey, k, rng, simple=simple)
        r = render(scene, survey, rng)
        lens_mags = _central_mags(scene, len(k), len(survey.bands))
        parts.append({
            "images": r.images,
            "labels": (k == LENS).astype(np.int8),
            "kind": np.array([KINDS[i].encode() for i in k], dtype="S9"),
            "theta_e": np.where(k == LENS, scene.theta_e, 0.0).astype(np.float32),
            "arc_snr": r.arc_snr.astype(np.float32),
            "lens_mag": lens_mags[:, ref].astype(np.float32),
            "source_mag": r.src_mags[:, ref].astype(np.float32),
            "lens_mags": lens_mags.astype(np.float32),
            "source_mags": r.src_mags.astype(np.float32),
            "psf_fwhm": scene.obs.fwhm.astype(np.float32),
            "artefacts": _artefact_flags(scene, len(k)),
        })
        if on_batch is not None:
            on_batch(len(k))
    out = {key: np.concatenate([pt[key] for pt in parts]) for key in parts[0]}
    if filled:
        from lenstrt.data.readers.base import sanitize

        out["images"], _ = sanitize(out["images"], inplace=True)
    return out


ARTEFACTS = {"saturated_star": 1, "cosmic_ray": 2, "masked": 4, "moffat_psf": 8, "star": 16}


def _artefact_flags(scene, b: int) -> np.ndarray:
    """Per cutout, which nuisances it has (bits of ARTEFACTS): for galleries and evaluation strata."""
    f = np.zeros(b, dtype=np.int8)
    st = scene.stars
    f[st.rows[st.saturated]] |= ARTEFACTS["saturated_star"]
    f[st.rows[~st.saturated]] |= ARTEFACTS["star"]
    f[scene.obs.cosmic] |= ARTEFACTS["cosmic_ray"]
    f[scene.obs.masked] |= ARTEFACTS["masked"]
    f[scene.obs.beta[:, 0] > 0] |= ARTEFACTS["moffat_psf"]
    return f


def _central_mags(scene, b: int, nb: int) -> np.ndarray:
    """Magnitudes of each cutout's first central ("lens" layer) component: the lens galaxy's bulge."""
    out = np.full((b, nb), np.nan)
    for comp in reversed([c for c in scene.comps if c.layer == "lens"]):
        out[comp.rows] = comp.mags
    return out


def simulate(spec: SimSpec, out: str | Path, progress: bool = True) -> dict:
    """Writes shards `shard-XXXXX.h5` and `dataset.json` into `out`; existing complete shards with the
    same spec are kept (a killed run resumes)."""
    import h5py

    from lenstrt.data.shards import write_shard
    from lenstrt.io import write_json
    from lenstrt.progress import progress_bar

    survey = load_survey(spec.survey, spec.image_size)
    mix = negative_mix(survey, spec.negative_mix, spec.companion_fraction)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-spec.n // spec.shard_size))
    attrs_base = {
        "survey": survey.name, "bands": json.dumps(survey.band_names), "pixel_scale": survey.pixel_scale,
        "units": "e- per pixel (all exposures), sky-subtracted", "seed": spec.seed,
        "lenstrt_version": __version__, "lens_fraction": spec.lens_fraction, "negative_mix": json.dumps(mix),
    }
    shards = []
    with progress_bar("simulate", total=spec.n, unit="systems", enabled=progress) as bar:
        for s in range(n_shards):
            lo, hi = s * spec.shard_size, min(spec.n, (s + 1) * spec.shard_size)
            path = out / f"shard-{s:05d}.h5"
            shards.append(path.name)
            if path.exists():
                try:
                    with h5py.File(path, "r") as f:
                        same = f.attrs.get("seed") == spec.seed and f.attrs.get("survey") == survey.name \
                            and f["images"].shape[0] == hi - lo \
                            and f.attrs.get("negative_mix") == json.dumps(mix) and f.attrs.get("lenstrt_version") == __version__
                except OSError:
                    same = False
                if same:
                    bar.advance(hi - lo)
                    continue
            rng = np.random.default_rng([spec.seed, s])
            arrays = simulate_arrays(survey, hi - lo, rng, spec.lens_fraction, on_batch=bar.advance, mix=mix)
            arrays["ids"] = np.array([f"{survey.name}-s{spec.seed}-{i:09d}".encode() for i in range(lo, hi)])
            write_shard(path, arrays, {**attrs_base, "shard": s, "first_index": lo}, storage=spec.storage)
    meta = {
        "schema": "lenstrt-dataset/1", "n": spec.n, "seed": spec.seed, "survey": survey.name,
        "bands": survey.band_names, "image_size": survey.image_size, "pixel_scale": survey.pixel_scale,
        "lens_fraction": spec.lens_fraction, "negative_mix": mix,
        "shards": shards, "lenstrt_version": __version__,
    }
    write_json(out / "dataset.json", meta)
    return meta
