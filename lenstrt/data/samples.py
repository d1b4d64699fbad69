"""A small labelled sample for validation and agreement checks: the first n cutouts of --data, else
cutouts simulated from the survey preset (shared by export validation and bench)."""

from __future__ import annotations

import numpy as np


def sample_cutouts(data: list[str] | None, n: int, survey: str | None, bands: int, image_size: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(images, labels or None, a description for reports)."""
    if data:
        from lenstrt.data.readers import iter_batches

        imgs, labels = [], []
        for b in iter_batches(data, n):
            imgs.append(b.images)
            labels.append(b.labels)
            if sum(len(i) for i in imgs) >= n:
                break
        x = np.concatenate(imgs)[:n]
        y = None if any(lb is None for lb in labels) else np.concatenate(labels)[:n]
        return x, y, f"{len(x)} cutouts from {data[0]}"
    from lenstrt.data.simulate import simulate_arrays
    from lenstrt.data.simulate.presets import load_survey
    from lenstrt.errors import ConfigError

    try:
        preset = load_survey(survey or "lsst-gri", image_size)
    except ConfigError:
        preset = None
    if preset is None or len(preset.bands) != bands:
        rng = np.random.default_rng(seed)
        return (rng.normal(size=(n, bands, image_size, image_size)).astype(np.float32), None,
                f"{n} Gaussian-noise cutouts (survey {survey!r} has no matching preset)")
    a = simulate_arrays(preset, n, np.random.default_rng([seed, n]), filled=True)
    return a["images"], a["labels"].astype(np.int64), f"{n} simulated {preset.name} cutouts (seed {seed})"
