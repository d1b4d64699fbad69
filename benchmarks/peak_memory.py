"""Peak memory of a command and every process it starts (DataLoader workers, torchrun ranks), sampled every
0.5 s from /proc: the summed PSS (shared pages split between the processes sharing them: the tree's real
footprint), the summed RSS, and the RSS of the command's own process. Linux only. Not a test.

    .venv/bin/python benchmarks/peak_memory.py lenstrt train --data sim200k --stream --max-steps 300 --out run
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # the process ended while we looked
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _bytes(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    t0 = time.time()
    proc = subprocess.Popen(sys.argv[1:])
    pss = rss = own = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        pss = max(pss, sum(_bytes(p, "Pss") for p in pids))
        rss = max(rss, sum(_bytes(p, "Rss") for p in pids))
        own = max(own, _bytes(proc.pid, "Rss"))
        time.sleep(0.5)
    mib = 2 ** 20
    print(f"peak: tree PSS {pss / mib:,.0f} MiB, tree RSS {rss / mib:,.0f} MiB, own RSS {own / mib:,.0f} MiB; "
          f"{time.time() - t0:.0f} s, exit {proc.returncode}", flush=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
