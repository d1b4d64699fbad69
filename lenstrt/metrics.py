"""The metrics the lens-finding field reports (Metcalf et al. 2019; Lanusse et al. 2018).

All take labels (1 lens, 0 not) and scores (higher = more lens-like); ties are handled by treating
equal scores as one threshold step.
"""

from __future__ import annotations

import numpy as np


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing, starting at (0, 0)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    p, n = max(y.sum(), 1), max((~y).sum(), 1)
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s[distinct]]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `max_fpr`."""
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def tpr_before_k_false_positives(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """TPR at the strictest threshold reached with fewer than k false positives.
    k=1 is TPR0 and k=10 is TPR10 of the Strong Lens Finding Challenge."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    neg = np.sort(s[~y])[::-1]
    if len(neg) < k:
        return float(y.sum() > 0)
    # threshold must be above the k-th highest non-lens score
    t = neg[k - 1]
    return float((s[y] > t).mean()) if y.any() else 0.0


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15):
    """(ece, bin mean prob, bin lens fraction, bin counts) over equal-width probability bins."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    conf = np.bincount(idx, weights=p, minlength=bins) / np.maximum(count, 1)
    acc = np.bincount(idx, weights=y, minlength=bins) / np.maximum(count, 1)
    ece = float(np.sum(count / max(len(p), 1) * np.abs(conf - acc)))
    return ece, conf, acc, count


def completeness_binned(values: np.ndarray, detected: np.ndarray, edges: np.ndarray):
    """Fraction detected per bin of `values` (e.g. theta_E, arc S/N): (centers, completeness, counts)."""
    idx = np.digitize(values, edges) - 1
    nb = len(edges) - 1
    ok = (idx >= 0) & (idx < nb)
    counts = np.bincount(idx[ok], minlength=nb)
    hits = np.bincount(idx[ok], weights=detected[ok].astype(float), minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        comp = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return 0.5 * (edges[1:] + edges[:-1]), comp, counts


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): T minimising the NLL of sigmoid(logit / T)."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        a = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, a) - y * a))

    lo, hi = np.log(0.05), np.log(20.0)
    for _ in range(80):  # golden-section search on log T (NLL is unimodal in T)
        m1, m2 = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
        if nll(m1) < nll(m2):
            hi = m2
        else:
            lo = m1
    return float(np.exp(0.5 * (lo + hi)))


def prevalence_correct(probs: np.ndarray, train_prevalence: float, prevalence: float = 1e-3) -> np.ndarray:
    """Bayes re-weighting of probabilities from the training lens fraction to a survey prevalence."""
    p = np.asarray(probs, dtype=np.float64)
    a = p * prevalence / train_prevalence
    b = (1 - p) * (1 - prevalence) / (1 - train_prevalence)
    return a / np.maximum(a + b, 1e-300)


def summary(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    ece, *_ = expected_calibration_error(labels, probs)
    return {
        "roc_auc": roc_auc(labels, probs),
        "tpr_at_fpr_1e-2": tpr_at_fpr(labels, probs, 1e-2),
        "tpr_at_fpr_1e-3": tpr_at_fpr(labels, probs, 1e-3),
        "tpr0": tpr_before_k_false_positives(labels, probs, 1),
        "tpr10": tpr_before_k_false_positives(labels, probs, 10),
        "ece": ece,
        "n": int(len(labels)),
        "n_lenses": int(np.sum(labels)),
    }


def wilson_interval(k: int, n: int, z: float = 1.0) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; z=1 is the 68.3% (1 sigma) interval. Chosen over
    the normal approximation because it stays inside [0, 1] and is sane at k=0 and k=n, which small
    strata hit; (nan, nan) when n=0."""
    if n <= 0:
        return float("nan"), float("nan")
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * np.sqrt(k * (n - k) / n + z2 / 4)
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def bin_index(values: np.ndarray, edges) -> np.ndarray:
    """Half-open bins [e_i, e_i+1) with an under bin and an over bin: 0 for v < e_0, i+1 for
    e_i <= v < e_i+1, len(edges) for v >= e_-1; -1 for NaN (no value, counted nowhere)."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="right")
    return np.where(np.isnan(v), -1, idx)


def bin_labels(edges, fmt: str = "{:g}") -> list[str]:
    """Names of bin_index's bins: ['<e0', 'e0-e1', ..., '>=eN']."""
    e = [fmt.format(x) for x in edges]
    return [f"<{e[0]}", *(f"{a}-{b}" for a, b in zip(e[:-1], e[1:])), f">={e[-1]}"]


def roc_auc_vs(lens_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """AUROC of lenses against one group of non-lenses alone (e.g. lens vs companion): the probability a
    random lens outscores a random member of the group, ties counting one half. NaN if either is empty."""
    a, b = np.asarray(lens_scores, dtype=np.float64), np.asarray(other_scores, dtype=np.float64)
    if not len(a) or not len(b):
        return float("nan")
    return roc_auc(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
