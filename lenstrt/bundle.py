"""The bundle contract: a directory with manifest.json and the artifacts it lists.

`lenstrt export` writes it; every runtime reads it and nothing else. The manifest carries sha256
digests of every file, so a runtime can verify what it loads, and for TensorRT engines the
TensorRT version, GPU and compute capability that built them: engines do not move between GPU
models or TensorRT versions, and `check_engine` refuses a mismatched one with the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenstrt.errors import BundleError
from lenstrt.io import sha256_file

SCHEMA = "lenstrt-bundle/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Member:
    name: str
    arch: str
    temperature: float
    entry: dict[str, Any]

    def artifact(self, kind: str) -> dict[str, Any] | None:
        return self.entry.get("artifacts", {}).get(kind)


class Bundle:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise BundleError(f"{self.root}: no {MANIFEST}; create a bundle with `lenstrt export --out {self.root}`")
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: corrupt manifest ({exc}); re-run `lenstrt export`") from exc
        if self.manifest.get("schema") != SCHEMA:
            raise BundleError(f"{path}: schema {self.manifest.get('schema')!r}, this lenstrt reads {SCHEMA}; "
                              "re-export the bundle with this version")

    @property
    def members(self) -> list[Member]:
        return [Member(m["name"], m["arch"], float(m["temperature"]), m) for m in self.manifest["members"]]

    @property
    def input(self) -> dict[str, Any]:
        return self.manifest["input"]

    @property
    def fused(self) -> dict[str, Any] | None:
        return self.manifest.get("fused")

    def path(self, artifact: dict[str, Any], verify: bool = False) -> Path:
        """The artifact's file, which must lie inside the bundle (a manifest is data from elsewhere:
        `../x.onnx` or an absolute path must not make serve load a file the bundle does not hold)."""
        rel = str(artifact["path"])
        root = self.root.resolve()
        p = (root / rel).resolve()
        if Path(rel).is_absolute() or not p.is_relative_to(root):
            raise BundleError(f"{self.root / MANIFEST}: artifact path {rel!r} points outside the bundle; "
                              "re-run `lenstrt export` (manifest paths are relative to the bundle)")
        if not p.is_file():
            raise BundleError(f"{self.root / rel}: listed in the manifest but missing; re-run `lenstrt export`")
        if verify and sha256_file(p) != artifact.get("sha256"):
            raise BundleError(mismatch(self.root / rel))
        return p

    def artifacts(self) -> list[dict[str, Any]]:
        """Every file the manifest lists: members' artifacts and checkpoints, the fused graph's artifacts."""
        out = []
        for m in self.members:
            out += list(m.entry.get("artifacts", {}).values()) + [m.entry["checkpoint"]]
        if self.fused:
            out += list(self.fused.get("artifacts", {}).values())
        return out

    def verify(self) -> list[dict[str, Any]]:
        """Checks every listed file (inside the bundle, present, sha256 as recorded); returns one record per
        file with `ok` and, if not, `error`. `lenstrt verify` prints them."""
        report = []
        for art in self.artifacts():
            try:
                self.path(art, verify=True)
                report.append({"path": art["path"], "bytes": art.get("bytes"), "ok": True})
            except BundleError as exc:
                report.append({"path": art["path"], "ok": False, "error": str(exc)})
        return report

    def manifest_sha256(self) -> str:
        return sha256_file(self.root / MANIFEST)


def mismatch(path: Path) -> str:
    return (f"{path}: sha256 does not match the manifest (file changed or corrupt); re-run `lenstrt export`, or "
            "copy the bundle again (`lenstrt verify BUNDLE` checks every file)")


def read_verified(path: str | Path, sha256: str | None) -> bytes:
    """The file's bytes, hashed as they are read (one read serves both the check and the load); refuses
    a file whose sha256 differs from the manifest's. `sha256` None (an artifact being built) skips it."""
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(mismatch(Path(path)))
    return data


def engine_fingerprint(trt_version: str, gpu_name: str, compute_capability: str) -> dict[str, str]:
    return {"tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": compute_capability}


def check_engine(engine: dict[str, Any], trt_version: str | None, gpu_name: str | None,
                 compute_capability: str | None, bundle_dir: str | Path = "BUNDLE") -> None:
    """Raise BundleError unless the engine was built by this TensorRT version on this GPU model.

    TensorRT serializes engines for one GPU architecture and one TensorRT release; loading one elsewhere
    fails at best and misbehaves at worst, so we refuse and say how to rebuild."""
    rebuild = (f"rebuild it here with `lenstrt export --checkpoint {bundle_dir}/checkpoints --fp16 "
               f"--out {bundle_dir}` (engines must be built on the GPU that runs them), or use --backend ort")
    name = engine.get("path", "engine")
    if trt_version is None:
        raise BundleError(f"{name}: TensorRT is not installed here; install lenstrt[trt] or use --backend ort/torch")
    if gpu_name is None:
        raise BundleError(f"{name}: no CUDA GPU here; TensorRT engines need one; use --backend ort or torch")
    built_v, built_gpu, built_cc = engine["tensorrt_version"], engine["gpu_name"], engine["compute_capability"]
    # TensorRT promises nothing across releases: compare major.minor.patch
    if built_v.split(".")[:3] != trt_version.split(".")[:3]:
        raise BundleError(f"{name}: built with TensorRT {built_v}, this machine has {trt_version}; {rebuild}")
    if built_cc != compute_capability or built_gpu != gpu_name:
        raise BundleError(f"{name}: built on {built_gpu} (sm {built_cc}), this machine has {gpu_name} "
                          f"(sm {compute_capability}); {rebuild}")
