"""Input fingerprints: a resume must not keep scores of a file that changed since they were written.

Per input file: size, modification time and the sha256 of its first and last MiB. Cheap at survey
scale (two small reads per file, not a hash of terabytes) and enough to catch a shard replaced in place
by other cutouts with the same name and row count, which is what a rerun of an upstream step does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

EDGE = 1 << 20


def fingerprint(path: str | Path) -> dict[str, Any]:
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(EDGE))
        if st.st_size > EDGE:
            fh.seek(max(EDGE, st.st_size - EDGE))
            h.update(fh.read(EDGE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_sha256": h.hexdigest()}


def changed(previous: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Files whose fingerprint differs from the one recorded (files new to the run are not 'changed')."""
    return [p for p, fp in current.items() if p in previous and previous[p] != fp]
