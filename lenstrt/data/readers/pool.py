"""One thread pool for reading many small files (per-object cutouts). Threads overlap the wait for a
file (network and parallel filesystems: milliseconds per open); header parsing itself holds the GIL, so
on a local, cached disk one thread reads as fast (benchmarks/read_files.py, docs/serve.md)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def threads() -> int:
    """LENSTRT_READ_THREADS, else 2 per core up to 16."""
    return max(1, int(os.environ.get("LENSTRT_READ_THREADS", 0)) or min(16, 2 * (os.cpu_count() or 1)))


def pmap(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`[fn(x) for x in items]`, in order, on the shared pool; the first exception is raised."""
    global _pool
    items = list(items)
    if len(items) < 2 or threads() == 1:
        return [fn(x) for x in items]
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads(), thread_name_prefix="lenstrt-read")
    return list(_pool.map(fn, items))
