"""What does `serve --tta-above P` buy, and what does it cost, at each gate P?

Reads two `scores.parquet` files that `lenstrt evaluate` wrote for the same labelled set and models: one
plain (one view) and one with `--tta` (8 views). For each gate, a cutout keeps its one-view score below the
gate and takes the 8-view score at or above it, exactly what `serve --tta-above` writes. Prints, per gate,
the share of non-lenses rescored, the compute on a survey relative to one view (1 + 7 x that share: at a
lens prevalence of ~1e-3 nearly every cutout is a non-lens), and AUROC, TPR at FPR 1e-2 and 1e-3, TPR0
and the lens vs companion AUROC. The set's non-lenses are hard ones, so a survey's share is lower still.

    python benchmarks/tta_cascade.py --plain EVAL/scores.parquet --tta EVAL_TTA/scores.parquet
"""

import argparse

import numpy as np


def cascade(one: np.ndarray, eight: np.ndarray, gate: float) -> np.ndarray:
    """The scores serve writes with --tta-above gate."""
    return np.where(one >= gate, eight, one)


def figures(labels: np.ndarray, kinds: np.ndarray, s: np.ndarray) -> dict[str, float]:
    from lenstrt.metrics import roc_auc, roc_auc_vs, tpr_at_fpr, tpr_before_k_false_positives

    lens = labels == 1
    return {"auroc": roc_auc(labels, s), "tpr@1e-2": tpr_at_fpr(labels, s, 1e-2),
            "tpr@1e-3": tpr_at_fpr(labels, s, 1e-3), "tpr0": tpr_before_k_false_positives(labels, s, 1),
            "lens_vs_companion": roc_auc_vs(s[lens], s[kinds == "companion"])}


def main(argv=None) -> None:
    import pyarrow.parquet as pq

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plain", required=True, help="scores.parquet of `lenstrt evaluate` (one view)")
    ap.add_argument("--tta", required=True, help="scores.parquet of `lenstrt evaluate --tta` on the same set")
    ap.add_argument("--gates", default="0.01,0.05,0.1,0.2,0.5,0.9")
    a = ap.parse_args(argv)
    p, t = pq.read_table(a.plain).to_pydict(), pq.read_table(a.tta).to_pydict()
    if p["id"] != t["id"]:
        raise SystemExit(f"{a.plain} and {a.tta} score different cutouts (ids differ); evaluate the same --data")
    labels = np.asarray(p["label"])
    kinds = np.asarray(p.get("kind", ["?"] * len(labels)))
    one, eight = np.asarray(p["score"], np.float64), np.asarray(t["score"], np.float64)
    rows = [("one view", 0.0, 1.0, figures(labels, kinds, one))]
    for g in (float(x) for x in a.gates.split(",")):
        hit = one >= g
        frac = float(np.mean(hit[labels == 0]))
        rows.append((f"--tta-above {g:g}", frac, 1 + 7 * frac, figures(labels, kinds, cascade(one, eight, g))))
    rows.append(("--tta (all)", 1.0, 8.0, figures(labels, kinds, eight)))
    keys = list(rows[0][3])
    print("| scores | non-lenses rescored | compute on a survey | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for name, frac, cost, f in rows:
        print(f"| {name} | {frac:.4f} | {cost:.2f}x | " + " | ".join(f"{f[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
