"""What a cloud instance installs: the lenstrt the user is running, shipped as a wheel.

lenstrt is not on PyPI, so `pip install lenstrt[trt,gpu]` on an instance fails in its setup, after the
user has paid for the instance to boot. By default `cloud launch` and `cloud skypilot` build a wheel of
the running version from its source tree and ship it with the bundle; a user-given spec (a path to a
wheel, or a pip requirement such as a git URL) is checked here, so an unresolvable one fails at launch.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lenstrt import __version__
from lenstrt.errors import LenstrtError

EXTRAS = "trt,gpu"  # instances serve TensorRT engines and ONNX Runtime CUDA


class PackageError(LenstrtError):
    """The lenstrt an instance should install cannot be built or resolved here."""


@dataclass(frozen=True)
class Install:
    wheel: Path | None   # a local wheel to ship with the job, or None for a requirement pip resolves there
    requirement: str     # what the instance's pip installs (a wheel's file name gets its local path there)
    version: str

    def pip_arg(self, wheel_dir: str) -> str:
        """The argument of `pip install` on the instance, with the wheel copied into `wheel_dir`."""
        if self.wheel is None:
            return self.requirement
        return f"{wheel_dir.rstrip('/')}/{self.wheel.name}[{EXTRAS}]"


def source_root() -> Path | None:
    """The source tree of the running lenstrt (an editable or in-place install), if there is one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "lenstrt" / "__init__.py").is_file() else None


def build_wheel(out_dir: Path) -> Path:
    root = source_root()
    if root is None:
        raise PackageError("this lenstrt was not installed from a source tree, so no wheel can be built from it; "
                           "pass --lenstrt-spec (a wheel file, or a requirement such as git+https://...)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(out_dir.glob(f"lenstrt-{__version__}-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise PackageError(f"{root}: building a wheel of lenstrt {__version__} failed ({last})")
    return wheels[-1]


def check_requirement(spec: str) -> None:
    """Fails unless pip can find `spec` from here (the instance reaches the same indexes)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise PackageError(f"--lenstrt-spec {spec!r}: pip could not resolve it within 300 s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise PackageError(f"--lenstrt-spec {spec!r} cannot be installed ({last}); leave the option out to ship "
                           f"this machine's lenstrt {__version__} as a wheel")


def resolve(spec: str | None, work: Path) -> Install:
    """None: a wheel of the running lenstrt, built into `work`. A path to a .whl: that wheel. Anything
    else: a pip requirement, checked now."""
    if spec is None:
        return Install(build_wheel(work), "", __version__)
    if spec.endswith(".whl") or Path(spec).exists():
        p = Path(spec)
        if not (p.is_file() and p.suffix == ".whl"):
            raise PackageError(f"--lenstrt-spec {spec}: not a wheel file")
        return Install(p, "", p.name.split("-")[1] if p.name.count("-") >= 2 else "?")
    check_requirement(spec)
    return Install(None, spec, "?")
