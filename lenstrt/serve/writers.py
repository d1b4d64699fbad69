"""Catalog parts (Parquet via pyarrow, or CSV), written atomically, and the top-K candidates."""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from lenstrt.io import atomic_path


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:06d}.{'parquet' if fmt == 'parquet' else 'csv'}"


def write_part(path: Path, columns: dict[str, np.ndarray | list], fmt: str) -> None:
    import pyarrow as pa

    # Each column made an Arrow array first: pa.table() of a dict of Python lists is ~15x slower (it holds
    # the GIL that long, starving serve's loop).
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)


def read_catalog(files: list[Path], fmt: str, columns: list[str] | None = None):
    import pyarrow as pa

    if not files:
        return None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    import pyarrow.csv as pacsv

    tables = [pacsv.read_csv(f) for f in files]
    t = pa.concat_tables(tables)
    return t.select(columns) if columns else t


def top_candidates(files: list[Path], fmt: str, k: int) -> list[dict]:
    """Top-k rows by score across all parts, reading one part at a time."""
    heap: list[tuple[float, int, dict]] = []
    counter = 0
    for f in files:
        t = read_catalog([f], fmt)
        if t is None or t.num_rows == 0:
            continue
        scores = t.column("score").to_numpy()
        take = np.argsort(-scores)[:k]
        rows = t.take(take).to_pylist()
        for r in rows:
            counter += 1
            item = (float(r["score"]), counter, r)
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
    return [r for _, _, r in sorted(heap, key=lambda x: (-x[0], x[1]))]


CANDIDATE_FILES = {"csv": "candidates.csv", "fits": "candidates.fits", "votable": "candidates.vot"}


def write_candidates(rows: list[dict], path: Path, fmt: str) -> None:
    """The top candidates as a table TOPCAT and astropy open (csv, fits or votable), atomically. Columns
    are the union over rows (parts from inputs with and without ra/dec may differ), in first-seen order."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in names]
    with atomic_path(path) as tmp:
        if fmt == "csv":
            import csv

            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=names, restval="")
                w.writeheader()
                w.writerows(rows)
            return
        from astropy.table import MaskedColumn, Table

        t = Table()
        for k in names:
            vals = [r.get(k) for r in rows]
            missing = [v is None for v in vals]
            fill = next((v for v in vals if v is not None), "")
            col = [fill if m else v for v, m in zip(vals, missing)]
            t[k] = MaskedColumn(col, mask=missing) if any(missing) else col
        t.meta["ORIGIN"] = "lenstrt serve"
        t.write(tmp, format="fits" if fmt == "fits" else "votable", overwrite=True)
