"""`lenstrt simulate`: physically simulated lens / non-lens cutouts in HDF5 shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenstrt import __version__
from lenstrt.data.simulate.population import KINDS, sample
from lenstrt.data.simulate.presets import Survey, load_survey

RENDER_BATCH = 256


@dataclass(frozen=True)
class SimSpec:
    n: int
    seed: int = 0
    survey: str = "lsst-gri"
    shard_size: int = 10_000
    lens_fraction: float = 0.5
    companion_fraction: float = 0.5   # of the non-lenses: hard negatives with companions
    image_size: int | None = None
    storage: str = "float32"          # float32 | float16 | zstd | float16-zstd (data/shards.py)


def simulate_arrays(survey: Survey, n: int, rng: np.random.Generator, lens_fraction: float = 0.5,
                    companion_fraction: float = 0.5, on_batch=None) -> dict[str, np.ndarray]:
    """n systems as the arrays of a shard (no ids). The core used by shards and on-the-fly training."""
    from lenstrt.data.simulate.photometry import psf_kernels
    from lenstrt.data.simulate.render import render

    u = rng.uniform(0, 1, n)
    kinds = np.where(u < lens_fraction, 1, np.where(u < lens_fraction + (1 - lens_fraction) * companion_fraction, 2, 0))
    kernels = psf_kernels(survey)
    parts = []
    for start in range(0, n, RENDER_BATCH):
        k = kinds[start:start + RENDER_BATCH]
        p = sample(survey, k, rng)
        r = render(p, survey, rng, kernels)
        ref = survey.band_names.index(survey.reference_band)
        parts.append({
            "images": r.images,
            "labels": (k == 1).astype(np.int8),
            "kind": np.array([KINDS[i].encode() for i in k], dtype="S9"),
            "theta_e": np.where(k == 1, p.theta_e, 0.0).astype(np.float32),
            "arc_snr": r.arc_snr.astype(np.float32),
            "lens_mag": p.lens_mags[:, ref].astype(np.float32),
            "source_mag": r.src_mags[:, ref].astype(np.float32),
            "lens_mags": p.lens_mags.astype(np.float32),
            "source_mags": r.src_mags.astype(np.float32),
        })
        if on_batch is not None:
            on_batch(len(k))
    return {key: np.concatenate([pt[key] for pt in parts]) for key in parts[0]}


def simulate(spec: SimSpec, out: str | Path, progress: bool = True) -> dict:
    """Writes shards `shard-XXXXX.h5` and `dataset.json` into `out`; existing complete shards with the
    same spec are kept (a killed run resumes)."""
    import h5py

    from lenstrt.data.shards import write_shard
    from lenstrt.io import write_json
    from lenstrt.progress import progress_bar

    survey = load_survey(spec.survey, spec.image_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-spec.n // spec.shard_size))
    attrs_base = {
        "survey": survey.name, "bands": json.dumps(survey.band_names), "pixel_scale": survey.pixel_scale,
        "units": "e- per pixel (all exposures), sky-subtracted", "seed": spec.seed,
        "lenstrt_version": __version__, "lens_fraction": spec.lens_fraction,
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
                            and f["images"].shape[0] == hi - lo
                except OSError:
                    same = False
                if same:
                    bar.advance(hi - lo)
                    continue
            rng = np.random.default_rng([spec.seed, s])
            arrays = simulate_arrays(survey, hi - lo, rng, spec.lens_fraction, spec.companion_fraction,
                                     on_batch=bar.advance)
            arrays["ids"] = np.array([f"{survey.name}-s{spec.seed}-{i:09d}".encode() for i in range(lo, hi)])
            write_shard(path, arrays, {**attrs_base, "shard": s, "first_index": lo}, storage=spec.storage)
    meta = {
        "schema": "lenstrt-dataset/1", "n": spec.n, "seed": spec.seed, "survey": survey.name,
        "bands": survey.band_names, "image_size": survey.image_size, "pixel_scale": survey.pixel_scale,
        "lens_fraction": spec.lens_fraction, "companion_fraction": spec.companion_fraction,
        "shards": shards, "lenstrt_version": __version__,
    }
    write_json(out / "dataset.json", meta)
    return meta
