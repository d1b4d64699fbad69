"""The inspection page: candidates from a serve output -> PAGE_DIR/{index.html, app.js, style.css,
data/index.js, data/chunk-NNNNNN.js, tiles/NNNNNN.png, page.json}.

Everything the page needs is in PAGE_DIR and referenced by relative paths, so index.html opens from disk
(file://) with no server and no network. Browsers refuse fetch() of file:// URLs, so the data files are
JavaScript that the page loads with <script> tags: `data/index.js` (ids, scores and spreads of all
candidates: what sorting and filtering need) at start, and `data/chunk-NNNNNN.js` (the rest of
CHUNK candidates: member scores, ra/dec, flags, source) only when a page of the grid shows one of them.
Tiles are PNGs named by rank, loaded by the browser only for the page shown.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lenstrt.errors import InputError
from lenstrt.inspect import GRADES

PAGE_SCHEMA = "lenstrt-inspect-page/1"
CHUNK = 100          # candidates per data/chunk-*.js file
STATIC = ("index.html", "app.js", "style.css")
_SKIP_SCORE_COLUMNS = {"score", "score_std", "score_survey"}


@dataclass
class ServeOutput:
    """A `lenstrt serve --out` directory as inspect reads it (never writes it, except grades.csv)."""

    root: Path
    parts: list[Path]
    fmt: str
    summary: dict[str, Any] | None

    @property
    def bundle_input(self) -> dict[str, Any] | None:
        """The bundle's input section (band order, size), to read cutouts as serve did; None if the
        bundle is no longer where serve found it (then the file's own band order is used)."""
        root = (self.summary or {}).get("bundle")
        if not root:
            return None
        try:
            manifest = json.loads((Path(root) / "manifest.json").read_text())
            return manifest["input"]
        except (OSError, ValueError, KeyError):
            return None


def open_serve_output(path: str | Path) -> ServeOutput:
    """The committed catalog parts of a serve output: those listed in ledger.jsonl (parts written after
    its last line were never committed and are ignored, as a resume would delete them)."""
    root = Path(path)
    fix = "pass the directory given to `lenstrt serve --out`"
    if not root.is_dir():
        raise InputError(f"{root}: no such directory; {fix}")
    ledger = root / "ledger.jsonl"
    catalog = root / "catalog"
    if ledger.is_file():
        names: list[str] = []
        lines = ledger.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                names.append(json.loads(line)["part"])
            except (ValueError, KeyError, TypeError):
                if i == len(lines) - 1:  # a torn last line: never committed
                    continue
                raise InputError(f"{ledger}: corrupt line {i + 1}; rerun the `lenstrt serve` command to repair "
                                 "the output") from None
        parts = [catalog / n for n in sorted(set(names))]
        missing = [p for p in parts if not p.is_file()]
        if missing:
            raise InputError(f"{missing[0]}: listed in {ledger} but missing; rerun `lenstrt serve` with "
                             "--no-resume to rebuild the catalog")
    elif catalog.is_dir():
        parts = sorted(p for p in catalog.glob("part-*") if p.suffix in (".parquet", ".csv"))
    else:
        raise InputError(f"{root}: not a `lenstrt serve` output (no ledger.jsonl, no catalog/); {fix}")
    if not parts:
        raise InputError(f"{root}: the serve output holds no catalog parts yet; let `lenstrt serve` finish "
                         "(or rerun it to resume), then inspect")
    summary = None
    if (root / "summary.json").is_file():
        try:
            summary = json.loads((root / "summary.json").read_text())
        except ValueError:
            summary = None
    fmt = "parquet" if parts[0].suffix == ".parquet" else "csv"
    return ServeOutput(root, parts, fmt, summary)


def select_candidates(so: ServeOutput, top: int | None, min_score: float):
    """Rows with score >= min_score, best first (ties by id), at most `top`; a pyarrow Table.
    One part is read at a time and the running selection kept at `top` rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lenstrt.serve.writers import read_catalog

    kept = None
    n_rows, best = 0, -math.inf
    for part in so.parts:
        t = read_catalog([part], so.fmt)
        if t is None or t.num_rows == 0:
            continue
        if "bundle" in t.column_names:
            t = t.drop(["bundle"])
        n_rows += t.num_rows
        scores = t.column("score")
        best = max(best, float(pc.max(scores).as_py()))
        t = t.filter(pc.greater_equal(scores, pa.scalar(min_score, scores.type)))
        if t.num_rows == 0:
            continue
        kept = t if kept is None else pa.concat_tables([kept, t], promote_options="default")
        if top is not None and kept.num_rows > 2 * top:
            kept = _sorted(kept).slice(0, top)
    if kept is None:
        raise InputError(f"{so.root}: no candidates with score >= {min_score:g} (the highest of {n_rows:,} "
                         f"rows is {best:.4g}); lower --min-score")
    kept = _sorted(kept)
    return kept.slice(0, top) if top is not None else kept


def _sorted(t):
    return t.sort_by([("score", "descending"), ("id", "ascending")])


def _num(v: Any, digits: int = 5) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def tile_name(rank: int) -> str:
    return f"{rank:06d}.png"


def _write_tile(image: np.ndarray, path: Path) -> None:
    """The galleries' colour composite (lenstrt.plots.composite: Lupton asinh of i,r,g), shown with the
    origin at the bottom as the galleries' imshow(origin="lower") does, as an 8-bit PNG."""
    from PIL import Image

    from lenstrt.plots import composite

    rgb = np.flipud(composite(image))
    Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), "RGB").save(path, optimize=False)


def _missing_source(source: str, cid: str) -> InputError:
    return InputError(f"{source}: the cutout file of candidate {cid} is missing (moved or deleted since "
                      "`lenstrt serve` read it); put it back at that path (relative paths are resolved from the "
                      "current directory: run inspect where serve ran)")


def _read_rows(f, indices: list[int]):
    """Cutouts at these (sorted) row indices of an open CutoutFile, reading nearby rows as one slice."""
    out: dict[int, np.ndarray] = {}
    i = 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] - indices[j] <= 32 and indices[j + 1] - indices[i] < 512:
            j += 1
        start, stop = indices[i], indices[j] + 1
        batch = f.read(start, stop)
        for k in indices[i:j + 1]:
            out[k] = batch.images[k - start]
        i = j + 1
    return out


def write_tiles(rows: list[dict], tiles: Path, bundle_input: dict | None, workers: int | None = None,
                progress: bool = True) -> None:
    """One PNG per candidate (tiles/<rank>.png): cutouts read in the main thread, file by file, as serve
    read them (the bundle's band order), composites computed and written on a thread pool."""
    from lenstrt.data.readers import CutoutFile
    from lenstrt.progress import progress_bar

    by_source: dict[str, list[int]] = defaultdict(list)
    for rank, r in enumerate(rows):
        by_source[str(r["source"])].append(rank)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    limit = threading.BoundedSemaphore(4 * workers)  # cutouts in flight: memory stays flat for 10^5 tiles
    futures: list[Future] = []

    def job(image: np.ndarray, path: Path) -> None:
        try:
            _write_tile(image, path)
        finally:
            limit.release()

    with progress_bar("tiles", len(rows), unit="tiles", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lenstrt-tile") as pool:
        for source, ranks in by_source.items():
            first = rows[ranks[0]]
            if not Path(source).is_file():
                raise _missing_source(source, str(first["id"]))
            if bundle_input:
                f = CutoutFile.for_bundle(source, bundle_input, ())
            else:
                f = CutoutFile(source)
            with f:
                by_index: dict[int, list[int]] = defaultdict(list)
                for rank in ranks:
                    idx = int(rows[rank]["index"])
                    if not 0 <= idx < f.n:
                        raise InputError(f"{source}: candidate {rows[rank]['id']} is row {idx} but the file holds "
                                         f"{f.n} cutouts (the file was replaced since `lenstrt serve`); score it "
                                         "again with `lenstrt serve --rescore-changed`")
                    by_index[idx].append(rank)
                images = _read_rows(f, sorted(by_index))
                for idx, img in images.items():
                    for rank in by_index[idx]:
                        limit.acquire()
                        fut = pool.submit(job, img, tiles / tile_name(rank))
                        fut.add_done_callback(lambda _f: bar.advance(1))
                        futures.append(fut)
            done = [fu for fu in futures if fu.done()]
            for fu in done:
                fu.result()  # raise a tile's error early
        for fu in futures:
            fu.result()


def _catalog_stamp(so: ServeOutput) -> str:
    """Changes when the committed catalog does (a resume added parts, a rerun rewrote them)."""
    h = hashlib.sha256()
    for p in so.parts:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def current_page(serve_out: str | Path, page_dir: str | Path, top: int | None, min_score: float) -> dict | None:
    """page.json of `page_dir` if it was built from this serve output, as it is now, with these options;
    else None (build it)."""
    try:
        meta = json.loads((Path(page_dir) / "page.json").read_text())
        so = open_serve_output(serve_out)
    except (OSError, ValueError, InputError):
        return None
    same = (meta.get("schema") == PAGE_SCHEMA and meta.get("serve_out") == str(so.root.resolve())
            and meta.get("top") == top and meta.get("min_score") == min_score
            and meta.get("catalog") == _catalog_stamp(so) and (Path(page_dir) / "index.html").is_file())
    if not same:
        return None
    meta["index_html"] = str(Path(page_dir) / "index.html")
    return meta


def _page_key(so: ServeOutput) -> str:
    """Names the page's grades in the browser's local storage: the same serve output gives the same key,
    so a rebuilt page (new --top, new scores after a resume) keeps the grades given."""
    return hashlib.sha256(str(so.root.resolve()).encode()).hexdigest()[:16]


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _install_static(dest: Path) -> None:
    pkg = resources.files("lenstrt.inspect") / "static"
    for name in STATIC:
        (dest / name).write_bytes((pkg / name).read_bytes())


def _prepare_out(out: Path) -> tuple[Path, Path]:
    """A temp directory beside `out` to build in; refuses an `out` that holds something else."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is a file; choose a directory for --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "page.json").is_file():
        raise InputError(f"{out}: exists and is not a page written by `lenstrt inspect` (no page.json); choose "
                         "another --out or empty it")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise InputError(f"{out}: cannot be used as --out ({exc.strerror or type(exc).__name__}); choose a "
                         "directory you can create and write") from exc
    return out, tmp


def _swap_in(tmp: Path, out: Path) -> None:
    """Renames the finished page over `out`: the old page (if any) stays whole until the new one is in."""
    old = out.parent / f".{out.name}.old{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def build_page(serve_out: str | Path, out: str | Path, top: int | None = 1000, min_score: float = 0.0,
               workers: int | None = None, progress: bool = True,
               log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Writes the page for the candidates of `serve_out` into `out` (built in a temp directory beside it,
    then renamed in). Returns page.json's content plus `index_html` (its path)."""
    so = open_serve_output(serve_out)
    out = Path(out)
    table = select_candidates(so, top, min_score)
    rows = table.to_pylist()
    members = [c[len("score_"):] for c in table.column_names
               if c.startswith("score_") and c not in _SKIP_SCORE_COLUMNS]
    has_radec = "ra" in table.column_names and "dec" in table.column_names
    out, tmp = _prepare_out(out)
    try:
        (tmp / "tiles").mkdir()
        (tmp / "data").mkdir()
        write_tiles(rows, tmp / "tiles", so.bundle_input, workers=workers, progress=progress)
        index: dict[str, Any] = {
            "schema": PAGE_SCHEMA, "key": _page_key(so), "title": f"lenstrt inspect: {so.root.name}",
            "serve_out": str(so.root.resolve()), "n": len(rows), "chunk": CHUNK, "members": members,
            "has_radec": has_radec, "top": top, "min_score": min_score,
            "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "grades": {str(k): v for k, v in GRADES.items()},
            "ids": [str(r["id"]) for r in rows],
            "score": [_num(r["score"]) for r in rows],
            "std": [_num(r["score_std"]) for r in rows],
        }
        (tmp / "data" / "index.js").write_text(f"window.LENSTRT_INSPECT_INDEX = {_json(index)};\n", encoding="utf-8")
        for c0 in range(0, len(rows), CHUNK):
            chunk = []
            for r in rows[c0:c0 + CHUNK]:
                rec: dict[str, Any] = {"m": [_num(r.get(f"score_{m}")) for m in members],
                                       "flags": int(r.get("flags") or 0),
                                       "source": Path(str(r["source"])).name, "index": int(r["index"])}
                if has_radec:
                    rec["ra"], rec["dec"] = _num(r.get("ra"), 6), _num(r.get("dec"), 6)
                chunk.append(rec)
            (tmp / "data" / f"chunk-{c0 // CHUNK:06d}.js").write_text(
                f"LENSTRT_INSPECT_CHUNK({c0 // CHUNK}, {_json(chunk)});\n", encoding="utf-8")
        _install_static(tmp)
        meta = {k: v for k, v in index.items() if k not in ("ids", "score", "std", "grades")}
        meta["catalog"] = _catalog_stamp(so)
        meta["ids_sha256"] = hashlib.sha256("\n".join(index["ids"]).encode()).hexdigest()
        (tmp / "page.json").write_text(json.dumps(meta, indent=2) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["index_html"] = str(out / "index.html")
    return meta


def page_ids(page_dir: str | Path) -> list[str]:
    """The candidate ids of a built page (from data/index.js)."""
    text = (Path(page_dir) / "data" / "index.js").read_text(encoding="utf-8")
    payload = text[text.index("=") + 1:].strip().rstrip(";")
    return list(json.loads(payload)["ids"])
