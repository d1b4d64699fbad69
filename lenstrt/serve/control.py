"""What keeps one output directory safe: one run at a time, and a graceful stop (a usable --out is
`lenstrt.io.writable_dir`, shared by every command).

- `OutputLock`: `fcntl.flock` on OUT/.lock for the whole run; a second serve on the same --out stops at
  once naming the holder's pid. The kernel drops the lock when its process dies, so a killed run's lock
  is simply taken over.
- `Preemption`: spot instances get SIGTERM about two minutes before they go, Ctrl-C is SIGINT. The first
  signal asks the run to drain (no new units; the units already started are finished and committed);
  a second one exits at once. Either way a rerun of the same command resumes exactly once, because
  commits are atomic (part file, then ledger line).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

from lenstrt.errors import InputError, LenstrtError


class Interrupted(LenstrtError):
    """The run stopped on a signal after committing what it had started; rerun to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


class OutputLock:
    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InputError(f"{self.path.parent}: another lenstrt serve (pid {holder}) is writing here; wait for "
                             "it, stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Preemption:
    """SIGTERM/SIGINT handling for one run (installed only in the main thread, where Python allows it)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, log=print):
        self.log = log
        self.drain = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            os._exit(128 + signum)  # second signal: at once; the ledger keeps the output exactly once
        self.signum = signum
        self.drain.set()
        self.log(f"{signal.Signals(signum).name}: finishing the units in progress, then stopping "
                 "(a second signal stops at once)")

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._previous.clear()
