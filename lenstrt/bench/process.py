"""The harness's handle on one worker process (bench/worker.py): start it, ask for timing windows, finish.

A worker that crashes, exits with an error or stops answering becomes `error` (its signal, its last
stderr line, or the timeout), never an exception in the harness: a failed row, not a dead report.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lenstrt.bench.worker import REPLY

WORKER_CMD = [sys.executable, "-m", "lenstrt.bench.worker"]   # tests replace it


class WorkerProcess:
    def __init__(self, cfg: dict[str, Any], timeout: float, cmd: list[str] | None = None):
        self.cfg, self.timeout = cfg, timeout
        self.error: str | None = None
        path = Path(cfg["out"]).with_suffix(".cfg.json")
        path.write_text(json.dumps(cfg))
        self._stderr = tempfile.TemporaryFile()
        self._buf = b""
        self.proc = subprocess.Popen([*(cmd or WORKER_CMD), str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        self._reply()  # the worker's "loaded" line (or the error that stops it: self.error)

    @property
    def ok(self) -> bool:
        return self.error is None

    def window(self, window_s: float, min_calls: int) -> dict[str, Any] | None:
        return self.request(f"window {window_s} {min_calls}")

    def finish(self) -> dict[str, Any]:
        """The worker's result (it scores the agreement set and exits), or {"ok": False, "error": ...}."""
        if self.ok and self.request("finish") is not None:
            self.proc.wait(timeout=self.timeout)
            try:
                return json.loads(Path(self.cfg["out"]).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                self.error = f"no result ({type(exc).__name__})"
            finally:
                self.close()
        self.close()
        return {"ok": False, "error": self.error or "failed"}

    def request(self, command: str) -> dict[str, Any] | None:
        if not self.ok:
            return None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died()
            return None
        return self._reply()

    def _reply(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                at = text.find(REPLY)  # anywhere: a library may have left half a line on stdout
                if at >= 0:
                    return json.loads(text[at + len(REPLY):])
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.error = f"timed out after {self.timeout:.0f} s"
                self.close()
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._died()
                return None
            self._buf += chunk

    def _died(self) -> None:
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # closed its stdout but lives on
            self.error = "stopped answering"
            self.close()
            return
        if rc < 0:
            self.error = f"crashed ({signal.Signals(-rc).name})"
        else:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            self.error = (lines or [f"exited with status {rc}"])[-1][:300]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self._stderr.close()
