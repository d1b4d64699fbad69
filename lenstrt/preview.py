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
        h5 = f._h5
        kinds = np.asarray(h5["kind"][: len(batch)]).astype(str) if h5 is not None and "kind" in h5 else None
        extra = {k: np.asarray(h5[k][: len(batch)]) for k in ("theta_e", "arc_snr")} if kinds is not None else {}
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
