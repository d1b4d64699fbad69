"""The serve pipeline: reader thread -> bounded queue -> ensemble -> writer thread.

Reading, inference and writing overlap, so a run goes at the speed of its slowest stage (the model,
when the pipeline is healthy). Work is cut into units (row ranges of one file, the same units a
distributed engine can hand to workers); each committed unit is one part file plus one ledger line.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt import __version__
from lenstrt.bundle import Bundle
from lenstrt.data.readers import FLAG_NONFINITE, CutoutFile, expand_paths
from lenstrt.errors import InputError, LenstrtError
from lenstrt.io import write_json
from lenstrt.serve.ledger import Ledger, Unit, plan_units
from lenstrt.serve.writers import part_name, top_candidates, write_part

_STOP = object()


@dataclass(frozen=True)
class ServeOptions:
    backend: str = "auto"
    batch_size: int = 128
    fmt: str = "parquet"
    fused: bool = False
    mc_samples: int = 0
    fusion: str = "mean"
    resume: bool = True
    strict: bool = False
    unit_rows: int = 8192
    top_k: int = 100
    gallery: bool = False
    compile: bool = False
    cuda_graph: bool = False
    concurrency: str = "auto"
    queue_depth: int = 4
    prevalence: float | None = None   # adds score_survey: the score re-weighted to this lens prevalence
    amp: bool | None = None           # torch backend: None = fp16 on CUDA, fp32 on CPU; True = also bf16 on CPU
    keep_columns: tuple[str, ...] | None = None   # input columns carried to the catalog; None = ra, dec where present
    candidates_format: str = "csv"                # csv | fits | votable
    pixel_scale_tolerance: float | None = 0.03    # refuse inputs whose WCS scale is off by more; None = no check
    readers: int = 1                  # reader processes (serve/readers.py); 1 = one reader thread
    rescore_changed: bool = False     # resume: score input files that changed since again (else refuse)
    precision: str = "auto"           # auto | fp32 | bf16 | fp16 | int8 (runtime/select.py)
    tta: bool = False                 # score each cutout as the mean of its 8 dihedral views (runtime/tta.py)
    tta_above: float | None = None    # ... only where the one-view score reaches this (a cascade; implies tta)


class BusyTime:
    """Seconds the ensemble was busy: the union of submit-to-result intervals that end in order. With two
    batches in flight on a GPU their intervals overlap; a plain sum counts the overlap twice."""

    def __init__(self) -> None:
        self.total, self.last_end = 0.0, float("-inf")

    def add(self, start: float, end: float) -> float:
        self.total += max(0.0, end - max(start, self.last_end))
        self.last_end = max(self.last_end, end)
        return self.total


def _append_error(out: Path, rec: dict) -> None:
    with open(out / "errors.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def _scan_inputs(inputs: list[str], bundle: Bundle, out: Path,
                 opts: ServeOptions | bool) -> tuple[list[tuple[str, int]], list[dict]]:
    """Opens every input once, as serve will (the bundle's bands by name, its size, the columns kept):
    mismatches (bands, size, pixel scale, columns) are one clear error before any work; unreadable files
    are recorded (or, with --strict, stop the run)."""
    from lenstrt.data.pixel_scale import check_pixel_scale, training_pixel_scale
    from lenstrt.data.readers import MismatchError

    if isinstance(opts, bool):  # the older signature passed `strict` alone
        opts = ServeOptions(strict=opts)
    want = tuple(bundle.input["shape"][1:])
    scale = training_pixel_scale(bundle.input) if opts.pixel_scale_tolerance is not None else None
    files, errors = [], []
    for p in expand_paths(inputs):
        try:
            with CutoutFile.for_bundle(p, bundle.input, opts.keep_columns) as f:
                info = f.info()
        except MismatchError:
            raise
        except InputError as exc:
            if opts.strict:
                raise
            errors.append({"file": str(p), "error": str(exc), "stage": "open"})
            continue
        got = (info.bands, info.height, info.width)
        if got != want:
            raise InputError(f"{p}: cutouts are {got[0]} bands x {got[1]}x{got[2]} px, the bundle expects "
                             f"{want[0]} bands ({', '.join(bundle.input['bands'])}) x {want[1]}x{want[2]} px; "
                             "re-make the cutouts or export a bundle trained on this shape")
        check_pixel_scale(info.pixel_scale, scale, str(p), opts.pixel_scale_tolerance)
        files.append((str(p), info.n))
    if not files:
        raise InputError(f"{inputs[0]}: no readable cutout files among the inputs (see {out}/errors.jsonl)")
    return files, errors


@dataclass
class Run:
    """Everything both serve paths (threads here, Ray in serve/ray.py) share for one output directory."""
    bundle: Bundle
    out: Path
    opts: ServeOptions
    units: list[Unit]
    todo: list[Unit]
    ledger: Ledger
    member_names: list[str]
    bundle_tag: str
    train_frac: float
    n_files: int
    open_errors: int

    @property
    def catalog(self) -> Path:
        return self.out / "catalog"

    def columns(self, parts: list) -> dict[str, Any]:
        return catalog_columns(parts, self.member_names, self.bundle_tag, self.opts.prevalence, self.train_frac)

    def commit(self, u: Unit, cols: dict[str, Any]) -> None:
        """Part file first (atomic), then the ledger line: the unit is in the catalog exactly once.

        The order is the whole guarantee. A crash or an error before the rename leaves no part; between
        the rename and the ledger line, a part that the next run deletes and redoes (it is not in the
        ledger); during the append, a torn last line that the next run drops (the same). Tested point by
        point in tests/test_faults_commit.py."""
        if u.key in self.ledger.done:  # a unit delivered twice (a retried Ray task) is committed once
            return
        name = part_name(u.index, self.opts.fmt)
        try:
            write_part(self.catalog / name, cols, self.opts.fmt)
        except OSError as exc:
            raise LenstrtError(f"{self.catalog / name}: cannot write ({exc.strerror}); free disk space and rerun "
                               "the same command: it resumes where it stopped") from exc
        try:
            self.ledger.record({"unit": u.key, "part": name, "rows": u.rows, "index": u.index})
        except OSError as exc:
            raise LenstrtError(f"{self.ledger.path}: cannot append ({exc.strerror}); free disk space and rerun the "
                               "same command: it resumes where it stopped") from exc

    def record_error(self, u: Unit, exc: Exception) -> None:
        _append_error(self.out, {"file": u.path, "rows": [u.start, u.stop], "error": str(exc), "stage": "read"})


def prepare(bundle_dir: str | Path, inputs: list[str], out: str | Path, opts: ServeOptions) -> Run:
    """Checks the inputs against the bundle, plans the work units, and opens the ledger (dropping parts
    that were written but never committed)."""
    bundle = Bundle(bundle_dir)
    out = Path(out)
    catalog = out / "catalog"
    if not opts.resume and out.exists():
        for name in ("catalog", "ledger.jsonl", "errors.jsonl", "run.json", "summary.json", "candidates.csv"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    catalog.mkdir(parents=True, exist_ok=True)
    files, open_errors = _scan_inputs(inputs, bundle, out, opts)
    for e in open_errors:
        _append_error(out, e)
    units = plan_units(files, opts.unit_rows)
    from lenstrt.serve.fingerprint import changed as changed_inputs
    from lenstrt.serve.fingerprint import fingerprint

    prints = {f: fingerprint(f) for f, _ in files}
    run = {"bundle_manifest_sha256": bundle.manifest_sha256(), "inputs": [f for f, _ in files],
           "unit_rows": opts.unit_rows, "format": opts.fmt, "fused": opts.fused, "mc_samples": opts.mc_samples,
           "fusion": opts.fusion, "prevalence": opts.prevalence, "keep_columns": opts.keep_columns,
           "tta": opts.tta or opts.tta_above is not None, "tta_above": opts.tta_above,
           "pixel_scale_tolerance": opts.pixel_scale_tolerance, "input_fingerprints": prints}
    run_file = out / "run.json"
    rescore: list[str] = []
    if run_file.exists():
        prev = json.loads(run_file.read_text())
        # every option that changes what a part holds: a resume must not mix two setups in one catalog
        changed = [k for k in ("bundle_manifest_sha256", "unit_rows", "format", "fused", "mc_samples", "fusion",
                               "prevalence", "keep_columns", "pixel_scale_tolerance", "tta", "tta_above")
                   if prev.get(k, False if k == "tta" else None) != (list(run[k]) if isinstance(run[k], tuple)
                                                                   else run[k])]
        if changed:
            raise InputError(f"{out}: holds a run with different {', '.join(changed)}; resume needs the same "
                             "bundle and options, or pass --no-resume to start over")
        rescore = changed_inputs(prev.get("input_fingerprints") or {}, prints)
        if rescore and not opts.rescore_changed:
            more = f" (and {len(rescore) - 1} more)" if len(rescore) > 1 else ""
            raise InputError(f"{rescore[0]}{more}: changed since {out} scored it (size, time or content differ); "
                             "pass --rescore-changed to score the changed file(s) again, or --no-resume to start "
                             "over")
    write_json(run_file, run)
    ledger = Ledger(out)
    if rescore:  # their units leave the ledger; their parts go with the uncommitted ones just below
        ledger.forget({u.key for u in units if u.path in set(rescore)})
    valid = {u.key for u in units}
    kept = {rec["part"] for k, rec in ledger.done.items() if k in valid}
    for f in catalog.iterdir():  # parts written but never committed to the ledger
        if f.name not in kept:
            f.unlink()
    todo = [u for u in units if u.key not in ledger.done]
    return Run(bundle, out, opts, units, todo, ledger, [m.name for m in bundle.members],
               run["bundle_manifest_sha256"][:12],
               float(np.mean([m.entry.get("train_lens_fraction", 0.5) for m in bundle.members])),
               len(files), len(open_errors))


def serve(bundle_dir: str | Path, inputs: list[str], out: str | Path, opts: ServeOptions = ServeOptions(),
          progress: bool = True, log=print) -> dict[str, Any]:
    """Scores `inputs` with the bundle into `out`: one run per output directory (a lock), stopped
    gracefully by SIGTERM/SIGINT (serve/control.py), resumable and exactly once."""
    from lenstrt.io import writable_dir
    from lenstrt.serve.control import OutputLock, Preemption

    out = writable_dir(out, "--out")
    with OutputLock(out), Preemption(log) as pre:
        return _serve(bundle_dir, inputs, out, opts, progress, log, pre)


def _serve(bundle_dir, inputs: list[str], out: Path, opts: ServeOptions, progress: bool, log, pre) -> dict[str, Any]:
    from lenstrt.runtime.registry import on_gpu
    from lenstrt.runtime.select import build_ensemble, choose_backend, detect
    from lenstrt.serve.control import Interrupted

    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run = prepare(bundle_dir, inputs, out, opts)
    bundle, out, units, todo, ledger = run.bundle, run.out, run.units, run.todo, run.ledger
    backend, device, why = choose_backend(opts.backend, detect(), bundle, opts.fused, precision=opts.precision)
    log(f"backend: {backend} ({device}) - {why}")
    log(f"{sum(u.rows for u in units):,} cutouts in {run.n_files} file(s); {len(units) - len(todo)} of {len(units)} "
        f"units already done" + (f"; {run.open_errors} unreadable file(s) skipped" if run.open_errors else ""))
    ens = build_ensemble(bundle, backend, device, fused=opts.fused, fusion=opts.fusion, mc_samples=opts.mc_samples,
                         compile=opts.compile, cuda_graph_batch=opts.batch_size if opts.cuda_graph else None,
                         concurrency=opts.concurrency, amp=opts.amp, precision=opts.precision, tta=opts.tta,
                         tta_above=opts.tta_above)
    if "tta" in ens.info:
        gate = ens.info["tta"]["above"]
        log("tta: the mean of 8 flips/rotations" + (" on every cutout (8x the compute)" if gate is None
                                                     else f" where the one-view score is >= {gate:g}"))
    stats = {"rows": 0, "infer_s": 0.0, "flagged": 0, "unit_errors": 0}
    busy = BusyTime()
    q_in: queue.Queue = queue.Queue(opts.queue_depth)
    q_out: queue.Queue = queue.Queue(opts.queue_depth)
    failure: list[BaseException] = []
    stop = threading.Event()
    pin = on_gpu(device)

    def put(item) -> bool:
        """q_in.put that gives up once the consumer has stopped (it may never read again)."""
        while not stop.is_set():
            try:
                q_in.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def reader() -> None:
        """Feeds q_in from one reader or N reader processes (serve/readers.py). On a graceful stop the
        units already started are delivered to their last batch and new ones dropped."""
        from lenstrt.serve.readers import Drain, unit_batches

        gate = Drain()
        try:
            # Batches serve may hold unreleased: the queue, the ones in flight, the one waiting to be queued.
            hold = opts.queue_depth + depth + 1
            for u, b, images, last, release in unit_batches(todo, opts.batch_size, bundle.input, opts.keep_columns,
                                                             opts.readers, pin, hold, stop):
                if stop.is_set():
                    break
                ok = gate.admit(u.key, last, pre.drain.is_set())
                if ok is None:
                    break
                if not ok:
                    release()
                elif not put((u, b, images, last, release)):
                    return
        except BaseException as exc:  # surfaced in the main thread
            failure.append(exc)
        finally:
            put(_STOP)

    def writer() -> None:
        try:
            while True:
                item = q_out.get()
                if item is _STOP:
                    return
                u, cols = item
                run.commit(u, cols)
        except BaseException as exc:
            failure.append(exc)
            stop.set()
            while q_out.get() is not _STOP:  # drain so the producer never blocks
                pass

    from lenstrt.progress import progress_bar

    # One reader thread (reading itself, or collecting from --readers N processes: h5py serialises
    # threads on one global lock and FITS parsing holds the GIL, so only processes add throughput).
    threads = [threading.Thread(target=reader, daemon=True, name="lenstrt-reader"),
               threading.Thread(target=writer, daemon=True, name="lenstrt-writer")]
    pending: dict[int, list] = {}
    strict_error: InputError | None = None
    # Batches submitted but not yet collected. On a GPU, two in flight let the next batch's copy and
    # enqueue overlap the current one's compute (the GPU never waits for Python to fuse scores or fetch
    # the next batch); on a CPU submit computes, so one is enough. Results are taken in order.
    in_flight: deque = deque()
    depth = 2 if pin else 1

    def complete_oldest() -> None:
        u, b, last, handle, release, t0 = in_flight.popleft()
        sc = ens.result(handle)
        release()  # the batch buffer may be reused: its result (so its upload, on a GPU) is in
        stats["infer_s"] = busy.add(t0, time.perf_counter())
        stats["rows"] += len(b)
        stats["flagged"] += int(np.count_nonzero(b.flags & FLAG_NONFINITE))
        pending.setdefault(u.index, []).append((b, sc))
        bar.advance(len(b))
        if last:
            q_out.put((u, run.columns(pending.pop(u.index))))

    with ens, progress_bar("serve", total=sum(u.rows for u in todo), unit="img", enabled=progress) as bar:
        t_loop = time.perf_counter()  # models loaded (CUDA graphs captured): from here on the pipeline streams
        for t in threads:
            t.start()
        try:
            while not failure:
                try:
                    item = q_in.get(timeout=0.2)  # not a bare get: a failed writer must not leave us waiting
                except queue.Empty:
                    continue
                if item is _STOP:
                    break
                u, b, images, last, release = item
                if isinstance(b, InputError):
                    while in_flight:  # this unit's earlier batches, and any other unit's, finish first
                        complete_oldest()
                    stats["unit_errors"] += 1
                    run.record_error(u, b)
                    pending.pop(u.index, None)
                    if opts.strict:
                        strict_error = b
                        break
                    bar.advance(u.rows)
                    continue
                # The clock runs from submit to result: with two in flight it overlaps, so inference_img_s is
                # a lower bound on the model's own speed there.
                t0 = time.perf_counter()
                in_flight.append((u, b, last, ens.submit(images), release, t0))
                if len(in_flight) >= depth:
                    complete_oldest()
            while in_flight and not failure and strict_error is None:
                complete_oldest()
        finally:  # on every exit, errors included: no thread left blocked, the ledger closed
            stop.set()  # the reader's put() sees it and returns
            q_out.put(_STOP)
            for t in threads:
                t.join()
            ledger.close()
        stats["loop_s"] = time.perf_counter() - t_loop
    if failure:
        raise failure[0]
    if strict_error is not None:
        raise InputError(f"{strict_error} (--strict: stopped; the output so far is intact, rerun to resume)")
    if pre.signum is not None:
        import signal

        summary = finish(run, ens.info, backend, device, why, stats, t_start, started)
        done = summary["counts"]["units_done"]  # the committed units, as finish counted them
        raise Interrupted(f"{signal.Signals(pre.signum).name}: stopped after committing the units in progress "
                          f"({done} of {len(units)} units done); rerun the same command to resume", pre.signum)
    return finish(run, ens.info, backend, device, why, stats, t_start, started)


def catalog_columns(parts: list, members: list[str], bundle_tag: str, prevalence: float | None = None,
                    train_frac: float = 0.5) -> dict[str, Any]:
    """One unit's catalog columns from its (Batch, Scores) pairs: the contract of a part file."""
    batches = [b for b, _ in parts]
    scores = [s for _, s in parts]
    n = sum(len(b) for b in batches)
    cols: dict[str, Any] = {
        "id": [i for b in batches for i in b.ids],
        "source": [b.source for b in batches for _ in range(len(b))],
        "index": np.concatenate([b.index for b in batches]),
        "score": np.concatenate([s.score for s in scores]).astype(np.float32),
        "score_std": np.concatenate([s.score_std for s in scores]).astype(np.float32),
    }
    per = np.concatenate([s.members for s in scores]).astype(np.float32)
    for j, m in enumerate(members):
        cols[f"score_{m}"] = per[:, j]
    if any(s.views is not None for s in scores):  # test-time augmentation: how many views each score is
        cols["tta_views"] = np.concatenate([np.ones(len(b), np.int8) if s.views is None else s.views
                                            for b, s in parts]).astype(np.int8)
    cols["flags"] = np.concatenate([b.flags for b in batches]).astype(np.int32)
    cols["bundle"] = [bundle_tag] * n
    if prevalence:
        from lenstrt.metrics import prevalence_correct

        cols["score_survey"] = prevalence_correct(cols["score"], train_frac, prevalence).astype(np.float32)
    for k in batches[0].columns:  # input columns carried (ra, dec, --keep-columns), after ours
        name = k if k not in cols else f"input_{k}"
        cols[name] = np.concatenate([np.asarray(b.columns[k]) for b in batches])
    return cols


def finish(run: Run, ens_info: dict, backend, device, why, stats, t_start: float, started: str,
           extra: dict | None = None) -> dict[str, Any]:
    """candidates.csv (or .fits / .vot; and .png) from the committed parts, then summary.json."""
    from lenstrt.serve.writers import CANDIDATE_FILES, write_candidates

    out, opts, bundle, units = run.out, run.opts, run.bundle, run.units
    keys = {u.key for u in units}
    done = [rec for rec in run.ledger.done.values() if rec["unit"] in keys]  # the ledger as committed, in memory
    parts = sorted(out / "catalog" / rec["part"] for rec in done)
    cands = top_candidates(parts, opts.fmt, opts.top_k)
    cands_path = out / CANDIDATE_FILES[opts.candidates_format]
    if cands:
        write_candidates(cands, cands_path, opts.candidates_format)
    wall = time.perf_counter() - t_start
    errors = 0
    if (out / "errors.jsonl").exists():
        with open(out / "errors.jsonl") as fh:
            errors = sum(1 for _ in fh)
    summary = {
        "schema": "lenstrt-serve-summary/1", "lenstrt_version": __version__, "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(bundle.root), "bundle_manifest_sha256": bundle.manifest_sha256(),
        "backend": backend, "device": device, "backend_choice": why, "ensemble": ens_info,
        "options": asdict(opts),
        "counts": {"input_rows": sum(u.rows for u in units), "catalog_rows": sum(r["rows"] for r in done),
                   "units": len(units), "units_done": len(done), "rows_this_run": stats["rows"],
                   "nonfinite_flagged_this_run": stats["flagged"], "errors_recorded": errors},
        "throughput": {
            "wall_s": round(wall, 2), "streaming_s": round(stats["loop_s"], 2),
            "end_to_end_img_s": round(stats["rows"] / stats["loop_s"], 1) if stats["rows"] else None,
            "inference_s": round(stats["infer_s"], 2),
            "inference_img_s": round(stats["rows"] / stats["infer_s"], 1) if stats["infer_s"] else None,
        },
        "catalog": str(out / "catalog"), "candidates": str(cands_path) if cands else None,
    }
    tp = summary["throughput"]
    if tp["end_to_end_img_s"] and tp["inference_img_s"]:
        tp["pipeline_efficiency"] = round(tp["end_to_end_img_s"] / tp["inference_img_s"], 3)
    if extra:
        summary.update(extra)
    if opts.gallery and cands:
        summary["gallery"] = str(_gallery(cands[:16], out / "candidates.png", bundle.input))
    write_json(out / "summary.json", summary)
    return summary


def _gallery(cands: list[dict], path: Path, bundle_input: dict | None = None) -> Path:
    """The top candidates as colour composites, read back as serve read them (bundle band order),
    titled with the user's ids."""
    from lenstrt.plots import gallery

    imgs = []
    for c in cands:
        f = CutoutFile.for_bundle(c["source"], bundle_input, ()) if bundle_input else CutoutFile(c["source"])
        with f:
            imgs.append(f.read(int(c["index"]), int(c["index"]) + 1).images[0])
    return gallery(np.stack(imgs), [f"{str(c['id'])[-14:]} p={c['score']:.3f}" for c in cands], path,
                   suptitle="top candidates")
