"""A gallery of a data set: a row per kind (lenses, then each kind of non-lens), or the first cutouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenstrt.data.readers import CutoutFile, expand_paths
from lenstrt.data.simulate import ARTEFACTS
from lenstrt.data.simulate.population import NEGATIVES
from lenstrt.plots import gallery


def write_gallery(paths, out: str | Path, per_kind: int = 8) -> Path:
    files = expand_paths(paths)
    with CutoutFile(files[0]) as f:
        batch = f.read(0, min(f.n, 2048))
        kind = f.extra("kind", 0, len(batch))
        kinds = kind.astype(str) if kind is not None else None
        extra = {k: f.extra(k, 0, len(batch)) for k in ("theta_e", "arc_snr", "artefacts")}
    imgs, titles = [], []
    if kinds is None:
        imgs = list(batch.images[: 3 * per_kind])
        titles = [i[-16:] for i in batch.ids[: 3 * per_kind]]
    else:
        present = list(dict.fromkeys(kinds))
        order = [k for k in ("lens", *NEGATIVES) if k in present] + [k for k in present if k not in ("lens", *NEGATIVES)]
        for kind in order:
            for i in np.flatnonzero(kinds == kind)[:per_kind]:
                imgs.append(batch.images[i])
                t = kind
                if kind == "lens":
                    t += f" θE={extra['theta_e'][i]:.1f}\" S/N={extra['arc_snr'][i]:.0f}"
                titles.append(t)
        flags = extra["artefacts"]
        if flags is not None:  # a row of the survey's nuisances: saturated stars, cosmic rays, masked pixels
            for name, bit in ARTEFACTS.items():
                for i in np.flatnonzero(flags & bit)[: (2 if bit < 8 else 1)]:
                    imgs.append(batch.images[i])
                    titles.append(f"{kinds[i]}: {name.replace('_', ' ')}")
    return gallery(np.stack(imgs), titles, out, ncols=per_kind, suptitle=f"{files[0].parent.name}: {len(files)} file(s)")
