"""Latency statistics as trtexec reports them."""

from __future__ import annotations

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
