"""Latency statistics as trtexec reports them; throughput stability over timing windows as perf_analyzer
judges it."""

from __future__ import annotations

from typing import Any

import numpy as np


def latency_stats(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """min/mean/p50/p90/p95/p99/max in milliseconds (linear-interpolated percentiles)."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    if a.size == 0:
        return {}
    p = np.percentile(a, [50, 90, 95, 99])
    return {"n": int(a.size), "min_ms": float(a.min()), "mean_ms": float(a.mean()), "p50_ms": float(p[0]),
            "p90_ms": float(p[1]), "p95_ms": float(p[2]), "p99_ms": float(p[3]), "max_ms": float(a.max())}


def top_k_overlap(ref: np.ndarray, other: np.ndarray, k: int = 100) -> float:
    """Fraction of the reference's top-k rows that are also in the other's top-k."""
    k = min(k, len(ref))
    a = set(np.argsort(-ref, kind="stable")[:k].tolist())
    b = set(np.argsort(-other, kind="stable")[:k].tolist())
    return len(a & b) / k if k else 1.0


def rel_spread(rates: list[float]) -> float:
    """(max - min) / median of throughputs: 0.05 = the windows agree within 5%."""
    a = np.asarray(rates, dtype=np.float64)
    med = float(np.median(a)) if a.size else 0.0
    return float((a.max() - a.min()) / med) if a.size and med > 0 else float("inf")


def is_stable(rates: list[float], k: int = 3, tol: float = 0.05) -> bool:
    """Whether the last `k` windows agree within `tol` (perf_analyzer's stability rule)."""
    return len(rates) >= k and rel_spread(rates[-k:]) <= tol


def spread(rates: list[float], k: int = 3, tol: float = 0.05) -> dict[str, Any]:
    """Throughput over timing windows: the figure reported (median of the last k windows) and the spread
    of every window (min / quartiles / max), whether the last k agreed within `tol`."""
    a = np.asarray(rates, dtype=np.float64)
    q1, med, q3 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    last = a[-k:]
    return {"windows": int(a.size), "stable": is_stable(list(a), k, tol), "tolerance": tol,
            "images_per_s": float(np.median(last)), "last_rel_spread": rel_spread(list(last)),
            "min": float(a.min()), "q1": q1, "median": med, "q3": q3, "max": float(a.max()),
            "iqr_pct": 100.0 * (q3 - q1) / med if med > 0 else None, "rates": [float(v) for v in a]}
