"""A gallery of a data set: a row per kind (lens, galaxy, companion), or the first cutouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenstrt.data.readers import CutoutFile, expand_paths
from lenstrt.plots import gallery


def write_gallery(paths, out: str | Path, per_kind: int = 8) -> Path:
    files = expand_paths(paths)
    with CutoutFile(files[0]) as f:
        batch = f.read(0, min(f.n, 512))
        kind = f.extra("kind", 0, len(batch))
        kinds = kind.astype(str) if kind is not None else None
        extra = {k: f.extra(k, 0, len(batch)) for k in ("theta_e", "arc_snr")}
    imgs, titles = [], []
    if kinds is None:
        imgs = list(batch.images[: 3 * per_kind])
        titles = [i[-16:] for i in batch.ids[: 3 * per_kind]]
    else:
        for kind in ("lens", "galaxy", "companion"):
            for i in np.flatnonzero(kinds == kind)[:per_kind]:
                imgs.append(batch.images[i])
                t = kind
                if kind == "lens":
                    t += f" θE={extra['theta_e'][i]:.1f}\" S/N={extra['arc_snr'][i]:.0f}"
                titles.append(t)
    return gallery(np.stack(imgs), titles, out, ncols=per_kind, suptitle=f"{files[0].parent.name}: {len(files)} file(s)")
