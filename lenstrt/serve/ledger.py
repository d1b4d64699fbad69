"""The ledger of completed work units: what makes a killed run resumable and its output exact.

A work unit is a row range of one input file. Its rows are written to a part file (temp name, then
renamed); only after the rename is a line appended to ledger.jsonl and fsync'ed. On restart, parts
listed in the ledger are kept, parts not listed (written just before a crash) are deleted and
redone, so the catalog (the parts listed in the ledger) holds every input row exactly once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lenstrt.errors import InputError


@dataclass(frozen=True)
class Unit:
    index: int       # position in the run's unit list (names the part file)
    path: str
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{self.path}:{self.start}:{self.stop}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_units(files: list[tuple[str, int]], unit_rows: int) -> list[Unit]:
    """Splits each (path, n rows) into units of at most `unit_rows` rows, in a stable order."""
    units = []
    for path, n in files:
        for start in range(0, n, unit_rows):
            units.append(Unit(len(units), path, start, min(n, start + unit_rows)))
    return units


class Ledger:
    def __init__(self, out: Path):
        self.path = out / "ledger.jsonl"
        self.done: dict[str, dict] = {}
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # a torn last line from a crash mid-append: not committed;
                        from lenstrt.io import atomic_path  # drop it so new lines follow valid ones

                        with atomic_path(self.path) as tmp:
                            tmp.write_text("".join(ln + "\n" for ln in lines[:i] if ln.strip()))
                        continue
                    raise InputError(f"{self.path}: corrupt line {i + 1}; pass --no-resume to start over") from None
                self.done[rec["unit"]] = rec
        self._fh = open(self.path, "a")

    def record(self, rec: dict) -> None:
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done[rec["unit"]] = rec

    def forget(self, keys: set[str]) -> None:
        """Drops these units from the ledger (their inputs changed: they are to be scored again). The
        file is rewritten atomically; their parts, no longer listed, are deleted by the next cleanup."""
        from lenstrt.io import atomic_path

        self._fh.close()
        self.done = {k: rec for k, rec in self.done.items() if k not in keys}
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(rec) + "\n" for rec in self.done.values()))
        self._fh = open(self.path, "a")

    def close(self) -> None:
        self._fh.close()
