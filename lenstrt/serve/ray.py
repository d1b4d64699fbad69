"""`lenstrt serve --ray`: the same units, ledger and catalog as the single-machine path, with the
scoring spread over a Ray cluster by Ray Data (the only module that imports ray).

Work units (row ranges of input files) become a dataset of shard descriptors; `map_batches` runs a
fixed-size actor pool (`ray.data.ActorPoolStrategy(size=workers)`, the API Ray 2.60 documents; each
actor loads the bundle once and keeps its Runners warm, one GPU per actor where there are GPUs: data
parallelism, no cross-GPU traffic). The driver streams the results and is the only writer: it commits
each unit (part file, then ledger line) once, so a crashed or preempted worker's unit is retried by Ray
and still lands exactly once.
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.errors import ConfigError, InputError
from lenstrt.serve.pipeline import ServeOptions, catalog_columns, finish, prepare


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--ray needs Ray Data: pip install 'lenstrt[ray]'") from exc
    return ray


class _ScoreUnits:
    """Ray Data actor: scores whole work units with the bundle's ensemble."""

    def __init__(self, bundle_dir: str, opts: dict, member_names: list[str], bundle_tag: str, train_frac: float):
        import torch

        from lenstrt.bundle import Bundle
        from lenstrt.runtime.select import build_ensemble, choose_backend, detect

        torch.set_num_threads(max(1, int(os.environ.get("LENSTRT_WORKER_THREADS", "1"))))
        self.opts = ServeOptions(**opts)
        bundle = Bundle(bundle_dir)
        self.backend, self.device, self.why = choose_backend(self.opts.backend, detect(), bundle, self.opts.fused)
        threads = int(os.environ.get("LENSTRT_WORKER_THREADS", "1"))
        self.ens = build_ensemble(bundle, self.backend, self.device, fused=self.opts.fused, fusion=self.opts.fusion,
                                  mc_samples=self.opts.mc_samples, threads=threads, tta=self.opts.tta,
                                  tta_above=self.opts.tta_above)
        self.ens.__enter__()
        self.member_names, self.bundle_tag, self.train_frac = member_names, bundle_tag, train_frac
        self.input = bundle.input  # bands by name, size: read as serve reads
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from lenstrt.data.readers import CutoutFile

        cols_all: list[dict[str, Any]] = []
        for i in range(len(batch["index"])):
            t0 = time.perf_counter()
            path, start, stop = str(batch["path"][i]), int(batch["start"][i]), int(batch["stop"][i])
            try:
                parts = []
                with CutoutFile.for_bundle(path, self.input, self.opts.keep_columns) as f:
                    for s in range(start, stop, self.opts.batch_size):
                        b = f.read(s, min(stop, s + self.opts.batch_size))
                        parts.append((b, self.ens.infer(b.images)))
                cols = catalog_columns(parts, self.member_names, self.bundle_tag, self.opts.prevalence,
                                       self.train_frac)
                n = len(cols["id"])
                cols["_error"] = np.array([""] * n, dtype=object)
            except InputError as exc:
                cols = {"_error": np.array([str(exc)], dtype=object)}
                n = 1
            cols["_unit"] = np.full(n, int(batch["index"][i]), dtype=np.int64)
            cols["_worker"] = np.array([self.worker] * n, dtype=object)
            cols["_busy_s"] = np.full(n, (time.perf_counter() - t0) / n, dtype=np.float64)
            cols_all.append(cols)
        keys: list[str] = []  # keep the catalog's column order (the single-machine order)
        for c in sorted(cols_all, key=len, reverse=True):
            keys += [k for k in c if k not in keys]
        out = {}
        for k in keys:
            vals = []
            for c in cols_all:
                n = len(c["_unit"])
                vals.append(np.asarray(c[k]) if k in c else np.array([None] * n, dtype=object))
            out[k] = np.concatenate(vals)
        return out


def serve_ray(bundle_dir: str | Path, inputs: list[str], out: str | Path, opts: ServeOptions = ServeOptions(),
              address: str | None = "auto", workers: int | None = None, gpus_per_worker: float | None = None,
              progress: bool = True, log=print) -> dict[str, Any]:
    """`address`: 'auto' (a running cluster, else a local one), a cluster address, or None (use the Ray
    session this process already started). The driver holds the output directory's lock, as serve does."""
    from lenstrt.io import writable_dir
    from lenstrt.serve.control import OutputLock

    out = writable_dir(out, "--out")
    with OutputLock(out):
        return _serve_ray(bundle_dir, inputs, out, opts, address, workers, gpus_per_worker, progress, log)


def _serve_ray(bundle_dir, inputs, out, opts, address, workers, gpus_per_worker, progress, log) -> dict[str, Any]:
    ray = _ray()
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if opts.strict:
        raise ConfigError("--strict is not supported with --ray: errors are recorded in errors.jsonl")
    run = prepare(bundle_dir, inputs, out, opts)
    if address is not None and not ray.is_initialized():
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus else 0.0
    if workers is None:
        workers = max(1, int(gpus / gpus_per_worker)) if gpus_per_worker else max(1, int(res.get("CPU", 1)) // 2)
    threads = max(1, int(res.get("CPU", 1)) // workers) if not gpus_per_worker else 2
    log(f"Ray cluster: {int(res.get('CPU', 0))} CPUs, {gpus} GPUs; {workers} worker(s) x {gpus_per_worker} GPU; "
        f"{len(run.units) - len(run.todo)} of {len(run.units)} units already done")
    stats: dict[str, Any] = {"rows": 0, "infer_s": 0.0, "flagged": 0, "unit_errors": 0}
    per_worker: dict[str, dict[str, float]] = defaultdict(lambda: {"rows": 0, "busy_s": 0.0})
    t_loop = time.perf_counter()
    if run.todo:
        import ray.data as rd

        descriptors = [{"index": u.index, "path": u.path, "start": u.start, "stop": u.stop} for u in run.todo]
        ds = rd.from_items(descriptors, override_num_blocks=len(descriptors))
        ds = ds.map_batches(
            _ScoreUnits, batch_size=1, batch_format="numpy",
            compute=rd.ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker or None,
            num_cpus=0 if gpus_per_worker else threads,
            fn_constructor_kwargs={"bundle_dir": str(Path(bundle_dir).resolve()),
                                   "opts": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
                                   "member_names": run.member_names, "bundle_tag": run.bundle_tag,
                                   "train_frac": run.train_frac},
            # Ray Data restarts dead pool actors and retries their tasks by default (tested by killing one)
            runtime_env={"env_vars": {"LENSTRT_WORKER_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}})
        by_index = {u.index: u for u in run.todo}
        pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
        got: dict[int, int] = defaultdict(int)
        from lenstrt.progress import progress_bar

        with progress_bar("serve (ray)", total=sum(u.rows for u in run.todo), unit="img", enabled=progress,
                          fields="{task.fields[workers]}") as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for unit_index in np.unique(batch["_unit"]):
                    sel = batch["_unit"] == unit_index
                    u = by_index[int(unit_index)]
                    err = [e for e in batch["_error"][sel] if e]
                    if err:
                        stats["unit_errors"] += 1
                        run.record_error(u, InputError(err[0]))
                        bar.advance(u.rows)
                        continue
                    part = {k: v[sel] for k, v in batch.items() if not k.startswith("_")}
                    pending[u.index].append(part)
                    got[u.index] += int(sel.sum())
                    w = str(batch["_worker"][sel][0])
                    per_worker[w]["rows"] += int(sel.sum())
                    per_worker[w]["busy_s"] += float(batch["_busy_s"][sel].sum())
                    bar.advance(int(sel.sum()))
                    if got[u.index] >= u.rows:
                        parts = pending.pop(u.index)
                        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                        for k in ("id", "source", "bundle"):
                            cols[k] = [str(x) for x in cols[k]]
                        run.commit(u, cols)
                        stats["rows"] += u.rows
                        stats["flagged"] += int(np.count_nonzero(np.asarray(cols["flags"]) & 1))
                bar.update(workers=f"{len(per_worker)} worker(s)")
    stats["loop_s"] = time.perf_counter() - t_loop
    stats["infer_s"] = sum(w["busy_s"] for w in per_worker.values())
    run.ledger.close()
    workers_info = {w: {"rows": int(v["rows"]), "busy_s": round(v["busy_s"], 2),
                        "img_s": round(v["rows"] / v["busy_s"], 1) if v["busy_s"] else None}
                    for w, v in per_worker.items()}
    extra = {"ray": {"cluster": {"cpus": int(res.get("CPU", 0)), "gpus": gpus, "nodes": len(ray.nodes())},
                     "workers": workers, "gpus_per_worker": gpus_per_worker, "threads_per_worker": threads,
                     "per_worker": workers_info}}
    info = {"members": run.member_names, "fused": opts.fused, "fusion": opts.fusion, "mc_samples": opts.mc_samples,
            "runners": "in Ray actors"}
    s = finish(run, info, opts.backend, "ray", "Ray Data actor pool", stats, t_start, started, extra)
    # inference_img_s here is per worker-second; the cluster rate is end_to_end_img_s
    return s
