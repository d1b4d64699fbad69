"""Grades: the CSV files graders export (`id,grade,grader,time`), merged into one table per id, and the
store behind `lenstrt inspect --serve` (SERVE_OUT/grades.csv, rewritten atomically on every grade).

Grades: 1 sure lens, 2 probable lens, 3 possible lens, 4 not a lens (lower = more lens-like).
Agreement per id: the fraction of its graders who gave its modal grade (ties: the lower grade is the
mode). Overall: Fleiss' kappa over the ids graded by two or more graders (docs/inspect.md).
"""

from __future__ import annotations

import csv
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lenstrt.errors import InputError
from lenstrt.inspect import GRADES
from lenstrt.io import atomic_path

FIELDS = ["id", "grade", "grader", "time"]
MERGED_FIELDS = ["id", "n_graders", "mean_grade", "modal_grade", "agreement", "n_1", "n_2", "n_3", "n_4", "graders"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_grades(path: str | Path) -> list[dict[str, Any]]:
    """One grader file -> rows {id, grade (1-4), grader, time}. A row without a grader takes the file's
    stem as grader; one with grade 0 or empty is an ungraded id and is skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such grades file; pass the CSV files exported from the inspect page "
                         "(or SERVE_OUT/grades.csv)")
    rows: list[dict[str, Any]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in reader.fieldnames or []]
            if "id" not in cols or "grade" not in cols:
                raise InputError(f"{path}: not a grades file (columns {', '.join(cols) or 'none'}; needs id,grade"
                                 "[,grader,time]); export it with the page's Export CSV button")
            for line, rec in enumerate(reader, start=2):
                rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
                g = rec.get("grade", "")
                if g in ("", "0"):
                    continue
                if g not in ("1", "2", "3", "4"):
                    raise InputError(f"{path}: line {line}: grade {g!r} is not 1-4 (1 sure lens, 2 probable, "
                                     "3 possible, 4 not a lens); fix or delete that line")
                if not rec.get("id"):
                    raise InputError(f"{path}: line {line}: empty id; fix or delete that line")
                rows.append({"id": rec["id"], "grade": int(g), "grader": rec.get("grader") or path.stem,
                             "time": rec.get("time", "")})
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file ({exc.reason}); pass the exported grades CSV") from exc
    return rows


def latest_per_grader(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(id, grader) -> that grader's last grade of that id (the latest time; equal times: the later row)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["id"], r["grader"])
        prev = out.get(key)
        if prev is None or str(r["time"]) >= str(prev["time"]):
            out[key] = r
    return out


def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa from per-item category counts (n_ij: raters who put item i in category j). Items
    rated by fewer than two raters carry no agreement information and are left out. With every item rated
    by the same number of raters this is Fleiss (1971) exactly; with unequal numbers, P_i uses each item's
    own rater count and p_j pools all ratings (the usual extension). None when undefined (no items,
    or all ratings in one category)."""
    items = [c for c in counts if sum(c) >= 2]
    if not items:
        return None
    total = sum(sum(c) for c in items)
    p = [sum(c[j] for c in items) / total for j in range(len(items[0]))]
    p_e = sum(x * x for x in p)
    p_i = [(sum(x * x for x in c) - sum(c)) / (sum(c) * (sum(c) - 1)) for c in items]
    p_bar = sum(p_i) / len(p_i)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def merge(files: list[str | Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Graders' files -> (one row per id, overall figures). Rows sorted by mean grade (most lens-like
    first), then by more graders, then id."""
    if not files:
        raise InputError("--merge needs one or more grades CSV files (lenstrt inspect --merge a.csv b.csv)")
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += read_grades(f)
    latest = latest_per_grader(rows)
    by_id: dict[str, dict[str, int]] = {}
    for (cid, grader), r in latest.items():
        by_id.setdefault(cid, {})[grader] = r["grade"]
    merged: list[dict[str, Any]] = []
    counts: list[list[int]] = []
    for cid, per in by_id.items():
        c = Counter(per.values())
        n = len(per)
        modal = min(c, key=lambda g: (-c[g], g))
        counts.append([c.get(g, 0) for g in GRADES])
        merged.append({"id": cid, "n_graders": n, "mean_grade": round(sum(per.values()) / n, 4),
                       "modal_grade": modal, "agreement": round(c[modal] / n, 4),
                       **{f"n_{g}": c.get(g, 0) for g in GRADES},
                       "graders": ";".join(f"{k}={v}" for k, v in sorted(per.items()))})
    merged.sort(key=lambda r: (r["mean_grade"], -r["n_graders"], r["id"]))
    multi = [r for r in merged if r["n_graders"] >= 2]
    kappa = fleiss_kappa(counts)
    stats = {"ids": len(merged), "graders": sorted({g for _, g in latest}), "files": [str(f) for f in files],
             "ids_multiply_graded": len(multi),
             "mean_agreement": round(sum(r["agreement"] for r in multi) / len(multi), 4) if multi else None,
             "fleiss_kappa": None if kappa is None else round(kappa, 4)}
    return merged, stats


def write_merged(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass a file name for --out (e.g. merged_grades.csv)")
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=MERGED_FIELDS)
                w.writeheader()
                w.writerows(rows)
    except OSError as exc:
        raise InputError(f"{path}: cannot be written ({exc.strerror or type(exc).__name__}); choose a writable "
                         "--out") from exc
    return path


class GradeStore:
    """SERVE_OUT/grades.csv for `--serve`: one row per (id, grader), the latest grade; rewritten whole and
    atomically (temp file, fsync, rename) after every change, so a crash leaves the previous file."""

    def __init__(self, path: str | Path, ids: Iterable[str] | None = None):
        self.path = Path(path)
        self.ids = set(ids) if ids is not None else None
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.exists():
            self.rows = latest_per_grader(read_grades(self.path))

    def put(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Validates and stores one grade {id, grade (0 clears), grader, time}; returns the stored row."""
        cid = rec.get("id")
        if not isinstance(cid, str) or not cid:
            raise ValueError("id: a non-empty string is needed")
        if self.ids is not None and cid not in self.ids:
            raise ValueError(f"id {cid!r} is not a candidate of this page")
        grade = rec.get("grade")
        if isinstance(grade, bool) or not isinstance(grade, int) or not 0 <= grade <= 4:
            raise ValueError("grade: an integer 1-4 (0 clears) is needed")
        grader = str(rec.get("grader") or "anonymous").strip()[:100] or "anonymous"
        time = str(rec.get("time") or now())[:40]
        row = {"id": cid, "grade": grade, "grader": grader, "time": time}
        with self._lock:
            if grade == 0:
                self.rows.pop((cid, grader), None)
            else:
                self.rows[(cid, grader)] = row
            self._write()
        return row

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.rows.values())

    def _write(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=FIELDS)
                w.writeheader()
                w.writerows(sorted(self.rows.values(), key=lambda r: (r["time"], r["id"], r["grader"])))
