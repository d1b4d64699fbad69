"""How compact are a set's plain galaxies next to our preset's, and does a model score the compact ones as lenses?

Measures every cutout of one non-lens kind (default `galaxy`) of a labelled set: the concentration of its
light in the reference band (flux within 0.6" of the centre over flux within 3", on the noisy image; unit-free,
so two simulators compare without zero points). Draws --n cutouts of that kind from our preset the same way,
and prints, by concentration bin, each one's share and, given the set's `scores.parquet` from `lenstrt
evaluate`, the share of the set's cutouts scored p > 0.5 and above the FPR 1e-2 threshold (all non-lenses).

    python benchmarks/galaxy_concentration.py --data xsim10k --scores EVAL/scores.parquet [--survey lsst-gri]
        [--set lens_size=0.3,2.6] [--kind galaxy] [--n 1000]

Issue #15: lenstronomy's set holds 2.4x our share of galaxies with over 40% of their light within 0.6", and
models trained on ours scored a fifth of those p > 0.5 (benchmarks/results/2026-12-01-cpu-compact-galaxies.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

BINS = (0.0, 0.25, 0.3, 0.35, 0.4, 0.45, 1.0)


def concentration(images: np.ndarray, pixel_scale: float, inner: float = 0.6, outer: float = 3.0) -> np.ndarray:
    """[N] flux within `inner` arcsec of the centre over flux within `outer` (one band, [N, H, W]; NaN as 0)."""
    x = np.nan_to_num(images.astype(np.float64))
    h, w = x.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    rr = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) * pixel_scale
    total = x[:, rr < outer].sum(axis=1)
    return x[:, rr < inner].sum(axis=1) / np.where(np.abs(total) > 0, total, np.nan)


def ours(survey_name: str, kind: str, n: int, seed: int, overrides: dict) -> np.ndarray:
    """Concentrations of n cutouts of `kind` from our preset (reference band), overrides applied."""
    from lenstrt.data.simulate.population import KINDS, sample
    from lenstrt.data.simulate.presets import load_survey
    from lenstrt.data.simulate.render import render

    sv = load_survey(survey_name)
    sv = dataclasses.replace(sv, population=dataclasses.replace(sv.population, **overrides))
    rng = np.random.default_rng(seed)
    ref = sv.band_names.index(sv.reference_band)
    out = []
    for start in range(0, n, 200):
        scene = sample(sv, np.full(min(200, n - start), KINDS.index(kind), np.int8), rng)
        out.append(concentration(render(scene, sv, rng).images[:, ref], sv.pixel_scale))
    return np.concatenate(out)


def table(theirs: np.ndarray, mine: np.ndarray, scores: np.ndarray | None, cut: float | None) -> str:
    head = "| light within 0.6\" / 3\" | share of the set | share of ours |"
    if scores is not None:
        head += " set: p > 0.5 | set: above the FPR 1e-2 threshold |"
    lines = [head, "|" + "---|" * head.count(" |")]
    def within(c, lo, hi):  # the end bins are open, so noise that pushes a ratio below 0 or past 1 still counts
        return ((c >= lo) | (lo == BINS[0])) & ((c < hi) | (hi == BINS[-1])) & np.isfinite(c)

    for lo, hi in zip(BINS[:-1], BINS[1:]):
        t, m = within(theirs, lo, hi), within(mine, lo, hi)
        row = f"| {lo:g}-{hi:g} | {t.mean():.3f} | {m.mean():.3f} |"
        if scores is not None and cut is not None:
            k = max(int(t.sum()), 1)
            row += f" {(scores[t] > 0.5).sum() / k:.3f} | {(scores[t] >= cut).sum() / k:.3f} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv=None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from field_objects import _pixel_scale
    from stratum_gap import _override

    from lenstrt.data.simulate.population import KINDS
    from lenstrt.errors import LenstrtError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a labelled set with a `kind` column (lenstrt simulate, cross_sim.py)")
    ap.add_argument("--scores", help="scores.parquet from `lenstrt evaluate --data DATA`")
    ap.add_argument("--survey", default="lsst-gri", help="our preset (name or YAML) to compare with")
    ap.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=LO,HI",
                    help="override a population range of our preset, e.g. lens_size=0.3,2.6")
    ap.add_argument("--kind", default="galaxy", choices=[k for k in KINDS if k != "lens"])
    ap.add_argument("--n", type=int, default=1000, help="cutouts drawn from our preset")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args(argv)
    overrides = dict(a.set)

    from lenstrt.data.readers import load_all
    from lenstrt.train.evaluate import threshold_at_fpr

    try:
        d = load_all(a.data, extra=("kind",))
        mine = ours(a.survey, a.kind, a.n, a.seed, overrides)
    except LenstrtError as e:  # a missing or unreadable set, an unknown preset
        ap.error(str(e))
    if "kind" not in d:
        ap.error(f"{a.data}: records no kind per cutout; pass a set made by `lenstrt simulate` or benchmarks/cross_sim.py")
    kinds = d["kind"].astype(str)
    pick = kinds == a.kind
    if not pick.any():
        ap.error(f"{a.data}: no cutouts of kind {a.kind!r} (it has {', '.join(sorted(set(kinds)))})")
    ref = d["images"].shape[1] - 1  # the reddest band: i for g,r,i, VIS alone for Euclid
    theirs = concentration(d["images"][pick, ref], _pixel_scale(a.data, "the 0.6\" and 3\" apertures"))
    scores = cut = None
    if a.scores:
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(a.scores, columns=["id", "score"]).to_pydict()
        except (OSError, KeyError, ValueError) as exc:
            ap.error(f"{a.scores}: not a scores.parquet from `lenstrt evaluate` ({type(exc).__name__}); "
                     f"run lenstrt evaluate --data {a.data} --out DIR and pass DIR/scores.parquet")
        if t["id"] != list(d["ids"].astype(str)):
            ap.error(f"{a.scores}: its ids are not those of {a.data} (evaluate --data {a.data} wrote another set)")
        s = np.asarray(t["score"])
        cut = threshold_at_fpr(d["labels"], s, 1e-2)
        scores = s[pick]
    label = a.survey + "".join(f" {k}={v[0]:g},{v[1]:g}" for k, v in overrides.items())
    print(f"{a.data}: {pick.sum()} {a.kind} cutouts; ours: {len(mine)} from {label}"
          + (f"; FPR 1e-2 threshold p >= {cut:.4f}" if cut is not None else "") + "\n")
    print(table(theirs, mine, scores, cut))


if __name__ == "__main__":
    main()
