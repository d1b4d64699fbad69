"""Does a bright object away from the centre (a star or a field galaxy) change a model's scores?

Reads a labelled set and the `scores.parquet` that `lenstrt evaluate` wrote for it, flags cutouts with a
bright source beyond --radius arcsec of the centre in the reference band (a pixel above --sigma times the
frame's robust noise: median and MAD of the outer 4-pixel frame, as the model's own scaling), and prints
the lens completeness with and without one by arc S/N, the same for each non-lens kind, and the lens vs
companion AUROC for each. A set made by another simulator (benchmarks/cross_sim.py) records no field
objects, hence the detection from pixels. Issue #15: lenses beside one were found half as often.

    python benchmarks/field_objects.py --data DIR --scores EVAL_DIR/scores.parquet [--band -1]
"""

import argparse

import numpy as np


def bright_field(images: np.ndarray, pixel_scale: float, radius: float, sigma: float, band: int) -> np.ndarray:
    """[N] bool: a pixel beyond `radius` arcsec of the centre above `sigma` times the frame noise."""
    x = images[:, band]
    n, h, w = x.shape
    frame = np.zeros((h, w), bool)
    frame[:4], frame[-4:], frame[:, :4], frame[:, -4:] = True, True, True, True
    med = np.median(x[:, frame], axis=1)
    mad = 1.4826 * np.median(np.abs(x[:, frame] - med[:, None]), axis=1)
    yy, xx = np.mgrid[:h, :w]
    outer = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) * pixel_scale > radius
    z = (x[:, outer] - med[:, None]) / np.maximum(mad, 1e-12)[:, None]
    return z.max(axis=1) > sigma


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--scores", required=True, help="scores.parquet from `lenstrt evaluate` on --data")
    ap.add_argument("--radius", type=float, default=3.2, help="arcsec; lenstronomy's set puts neighbours >= 3\"")
    ap.add_argument("--sigma", type=float, default=30.0)
    ap.add_argument("--band", type=int, default=-1, help="band index (default: the last, i for g,r,i)")
    ap.add_argument("--max-theta-e", type=float, default=2.0,
                    help="lenses used: theta_E below this, so an arc itself seldom reaches --radius")
    a = ap.parse_args(argv)

    import pyarrow.parquet as pq

    from lenstrt.data.readers import load_all
    from lenstrt.metrics import roc_auc_vs
    from lenstrt.train.evaluate import threshold_at_fpr

    try:
        t = pq.read_table(a.scores, columns=["id", "score"]).to_pydict()
    except (OSError, KeyError, ValueError) as exc:  # missing, not Parquet, or without the columns
        raise SystemExit(f"{a.scores}: not a scores.parquet from `lenstrt evaluate` ({type(exc).__name__}: {exc}); "
                         "run lenstrt evaluate --data DATA --out DIR and pass DIR/scores.parquet") from None
    d = load_all(a.data, extra=("theta_e", "arc_snr", "kind"))
    if t["id"] != list(d["ids"].astype(str)):
        raise SystemExit(f"{a.scores}: its ids are not those of {a.data} (evaluate --data {a.data} wrote another set)")
    s, labels = np.asarray(t["score"]), d["labels"]
    pix = _pixel_scale(a.data)
    bright = bright_field(d["images"], pix, a.radius, a.sigma, a.band)
    cut = threshold_at_fpr(labels, s, 1e-2)
    lens = (labels == 1) & (d["theta_e"] < a.max_theta_e)
    print(f"{a.data}: a source > {a.sigma:g} sigma beyond {a.radius:g}\" in {bright.mean():.0%} of cutouts; "
          f"lenses with theta_E < {a.max_theta_e:g}\"; FPR 1e-2 threshold p >= {cut:.4f}")
    print("| arc S/N | lenses | with a bright field object | completeness p>0.5 with / without | at FPR 1e-2 with / without |")
    print("|---|---|---|---|---|")
    snr = d["arc_snr"]
    for lo, hi in ((20, 100), (100, 300), (300, np.inf)):
        m = lens & (snr >= lo) & (snr < hi)
        w, wo = m & bright, m & ~bright
        print(f"| {lo}-{hi:g} | {m.sum()} | {w.sum() / max(m.sum(), 1):.0%} | {_share(s[w] > 0.5)} / "
              f"{_share(s[wo] > 0.5)} | {_share(s[w] >= cut)} / {_share(s[wo] >= cut)} |")
    kinds = d["kind"].astype(str)
    for k in sorted(set(kinds[labels == 0])):
        m = kinds == k
        print(f"{k}: p > 0.5 with / without a bright field object {_share(s[m & bright] > 0.5)} / "
              f"{_share(s[m & ~bright] > 0.5)} (n {np.sum(m & bright)} / {np.sum(m & ~bright)})")
    comp = kinds == "companion"
    if comp.any():
        print(f"lens vs companion AUROC, lenses with / without one: {roc_auc_vs(s[lens & bright], s[comp]):.3f} / "
              f"{roc_auc_vs(s[lens & ~bright], s[comp]):.3f}")


def _share(hit: np.ndarray) -> str:
    return f"{hit.mean():.3f}" if hit.size else "-"


def _pixel_scale(data: str, needed_by: str = "--radius") -> float:
    from lenstrt.data.readers import inspect

    scale = inspect(data).files[0].pixel_scale
    if scale is None:
        raise SystemExit(f"{data}: records no pixel scale; {needed_by} needs one")
    return float(scale)


if __name__ == "__main__":
    main()
