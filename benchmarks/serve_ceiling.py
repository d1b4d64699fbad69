"""The serve pipeline's own ceiling: the real `serve()` with a Runner that returns zeros, over HDF5
cutouts in the page cache, against a bare h5py slice loop, with 1 and N reader processes; and where the
time goes (reading, building catalog columns, writing parts). Not a test: ratios measured in one run.

    .venv/bin/python benchmarks/serve_ceiling.py [--n 100000] [--batch-size 512] [--readers 1,2]
        [--storage float16,zstd,float16-zstd]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


class ZeroRunner:
    """A Runner whose model costs nothing: what is left is the pipeline."""

    backend = "zeros"
    asynchronous = False

    def __init__(self, name: str):
        self.name, self.active, self.stream, self.max_batch = name, False, None, None
        self.info = {"backend": "zeros"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def infer(self, images):
        return np.zeros(len(images), np.float32)


def make_inputs(root: Path, n: int, storage: str = "float32", shard: int = 10_000) -> list[Path]:
    """Shards as `lenstrt simulate --storage` writes them, of sky-like pixels (noise around a sky level)."""
    from lenstrt.data.shards import write_shard

    rng = np.random.default_rng(0)
    block = (400 + 20 * rng.normal(size=(1000, 3, 64, 64))).astype(np.float32)
    files = []
    root.mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(range(0, n, shard)):
        m = min(shard, n - a)
        p = root / f"shard{k:03d}.h5"
        write_shard(p, {"images": np.concatenate([block] * (-(-m // 1000)))[:m]}, {"bands": json.dumps(["g", "r", "i"])},
                    storage=storage)
        files.append(p)
    return files


def fake_bundle(root: Path) -> Path:
    b = root / "bundle"
    b.mkdir()
    (b / "manifest.json").write_text(json.dumps({
        "schema": "lenstrt-bundle/1", "input": {"name": "images", "shape": [-1, 3, 64, 64], "bands": ["g", "r", "i"],
                                                "image_size": 64, "survey": None},
        "output": {"name": "logits"}, "batch": {"min": 1, "opt": 64, "max": 1024},
        "members": [{"name": "zero", "arch": "none", "temperature": 1.0, "artifacts": {}}], "fused": None}))
    return b


def _copy(q, seconds: float = 0.5) -> None:
    a = np.ones(1 << 26, np.float32)  # 256 MiB: far past any cache
    b = np.empty_like(a)
    np.copyto(b, a)  # pages touched before the clock starts
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        np.copyto(b, a)
        n += a.nbytes
    q.put(n / (time.perf_counter() - t0))


def copy_bandwidth(procs: int) -> float:
    """GB/s of memcpy summed over `procs` processes copying at once: the machine's memory wall."""
    import multiprocessing as mp

    q = mp.get_context("fork").Queue()
    ps = [mp.get_context("fork").Process(target=_copy, args=(q,)) for _ in range(procs)]
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--readers", default="1,2")
    ap.add_argument("--storage", default="float16,zstd,float16-zstd", help="Other storages to time.")
    a = ap.parse_args()
    import h5py

    import lenstrt.runtime.select as select
    from lenstrt.data.readers import CutoutFile
    from lenstrt.runtime.ensemble import Ensemble
    from lenstrt.serve.pipeline import ServeOptions, serve
    from lenstrt.serve.writers import write_part

    select.build_ensemble = lambda bundle, *args, **kw: Ensemble([ZeroRunner("zero")], ["zero"], [1.0])
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        files = make_inputs(root / "float32", a.n)
        bundle = fake_bundle(root)
        gb = a.n * 3 * 64 * 64 * 4 / 1e9
        rows = {}

        def bare() -> None:
            buf = np.empty((a.batch_size, 3, 64, 64), np.float32)
            for p in files:
                with h5py.File(p, "r") as f:
                    d = f["images"]
                    for s in range(0, d.shape[0], a.batch_size):
                        m = min(a.batch_size, d.shape[0] - s)
                        d.read_direct(buf[:m], np.s_[s:s + m])

        def cutoutfile() -> None:
            for p in files:
                with CutoutFile(p) as f:
                    for s in range(0, f.n, a.batch_size):
                        f.read(s, min(f.n, s + a.batch_size))

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return a.n / (time.perf_counter() - t0)

        bare()  # page cache warm
        rows["bare h5py slice loop (read_direct)"] = timed(bare)
        rows["CutoutFile.read (checks, NaN fill)"] = timed(cutoutfile)
        cols = {"id": [f"x{i}" for i in range(8192)], "score": np.zeros(8192, np.float32),
                "flags": np.zeros(8192, np.int32)}
        t0 = time.perf_counter()
        for k in range(5):
            write_part(root / f"p{k}.parquet", cols, "parquet")
        rows["write_part alone (8192-row parts)"] = 5 * 8192 / (time.perf_counter() - t0)
        serve_rows: dict[tuple[str, int], float] = {}
        for r in {1, max(int(x) for x in a.readers.split(","))}:  # imports and first forks off the clock
            serve(bundle, [str(files[0])], root / f"warm{r}", ServeOptions(backend="ort", batch_size=a.batch_size,
                  readers=r, resume=False), progress=False, log=lambda *x: None)
        for st in ["float32"] + [x for x in a.storage.split(",") if x]:
            inputs = files if st == "float32" else make_inputs(root / st, a.n, st)
            mb = sum(p.stat().st_size for p in inputs) / 2**20
            for r in (int(x) for x in a.readers.split(",")):
                s = serve(bundle, [str(p) for p in inputs], root / f"out-{st}-{r}",
                          ServeOptions(backend="ort", batch_size=a.batch_size, readers=r, resume=False),
                          progress=False, log=lambda *x: None)
                serve_rows[st, r] = s["throughput"]["end_to_end_img_s"]
                rows[f"serve(), zeros, {st} ({mb:,.0f} MiB), --readers {r}"] = serve_rows[st, r]
        bw = {k: copy_bandwidth(k) for k in (1, 2)}
    print(f"{a.n:,} cutouts 3x64x64 float32 ({gb:.2f} GB) in HDF5, page cache warm, batch {a.batch_size}")
    for k, v in rows.items():
        print(f"  {k:<58} {v:>10,.0f} img/s  ({v * 3 * 64 * 64 * 4 / 1e9:.2f} GB/s)")
    print(f"  memory copy bandwidth: 1 process {bw[1]:.1f} GB/s, 2 processes {bw[2]:.1f} GB/s together "
          f"({bw[2] / bw[1]:.2f}x): reading from the page cache is a copy, so it scales at most this much")
    for (st, r), v in serve_rows.items():
        if r != 1 and (st, 1) in serve_rows:
            print(f"  {st}: --readers {r} / --readers 1: {v / serve_rows[st, 1]:.2f}x")

if __name__ == "__main__":
    main()
