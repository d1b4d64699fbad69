"""`lenstrt inspect --serve`: the page over HTTP from the standard library, grades written to disk.

GET serves PAGE_DIR's files; GET /grades returns the stored grades (JSON); POST /grades takes one grade
{id, grade, grader, time} (grade 0 clears it) or a list of them and writes SERVE_OUT/grades.csv
atomically before answering. Bound to 127.0.0.1 unless --host says otherwise. POSTs must be
`Content-Type: application/json` (a cross-site page cannot send that without a CORS preflight, which this
server never approves) and, when the browser sends an Origin, come from this server's own origin.
"""

from __future__ import annotations

import functools
import json
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lenstrt.inspect.grades import GradeStore

MAX_BODY = 1 << 20


class _Handler(SimpleHTTPRequestHandler):
    store: GradeStore
    quiet: bool = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        if not self.quiet:
            super().log_message(format, *args)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/grades":
            self._json(HTTPStatus.OK, {"grades": self.store.all(), "file": str(self.store.path)})
            return
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/grades":
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST grades to /grades"})
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send Content-Type: application/json"})
            return
        origin = self.headers.get("Origin")
        host = self.headers.get("Host")
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            self._json(HTTPStatus.FORBIDDEN, {"error": f"origin {origin} is not this server"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"a JSON body of 1 byte to {MAX_BODY} bytes is needed"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
            recs = payload if isinstance(payload, list) else [payload]
            if not all(isinstance(r, dict) for r in recs):
                raise ValueError("each grade is an object {id, grade, grader, time}")
            stored = [self.store.put(r) for r in recs]
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except OSError as exc:
            self._json(HTTPStatus.INSUFFICIENT_STORAGE, {"error": f"{self.store.path}: {exc}"})
            return
        self._json(HTTPStatus.OK, {"ok": True, "stored": stored, "file": str(self.store.path)})


def make_server(page_dir: str | Path, grades_csv: str | Path, host: str = "127.0.0.1", port: int = 8765,
                ids: list[str] | None = None, quiet: bool = True) -> ThreadingHTTPServer:
    """A server (not yet serving: call serve_forever) for PAGE_DIR writing grades to `grades_csv`;
    port 0 picks a free port (server.server_address[1])."""
    store = GradeStore(grades_csv, ids)
    handler = type("InspectHandler", (_Handler,), {"store": store, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(page_dir)))
    server.daemon_threads = True
    return server
