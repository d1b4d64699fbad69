"""The bundle contract: a directory with manifest.json and the artifacts it lists.

`lenstrt export` writes it; every runtime reads it and nothing else. The manifest carries sha256
digests of every file, so a runtime can verify what it loads, and for TensorRT engines the
TensorRT version, GPU and compute capability that built them: engines do not move between GPU
models or TensorRT versions, and `check_engine` refuses a mismatched one with the fix.

Precision is data (schema 2): every artifact entry says its `format` (onnx, plan) and `precision`
(fp32, fp16, bf16, int8), runtimes look artifacts up by that pair (`find`), and each member records the
tolerances its precisions were validated against, keyed by precision. Schema 1 bundles (no `format` or
`precision` in most entries: the kind was in the key, `onnx_fp16`, `plan_int8`) are still read: `kind`
derives the pair from the key there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenstrt.errors import BundleError
from lenstrt.io import sha256_file

SCHEMA = "lenstrt-bundle/2"
SCHEMAS = ("lenstrt-bundle/1", SCHEMA)   # what this lenstrt reads
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def kind(key: str, entry: dict[str, Any]) -> tuple[str, str]:
    """(format, precision) of an artifact entry: its own fields (schema 2), else from its key and its
    free-text precision (schema 1: `onnx`, `onnx_fp16`, `onnx_int8`, `plan` (fp16 unless it says), `plan_int8`)."""
    fmt, _, suffix = key.partition("_")
    fmt = str(entry.get("format") or fmt)
    text = str(entry.get("precision") or "").split(" ")[0]
    if text in PRECISIONS:
        return fmt, text
    if suffix in PRECISIONS:
        return fmt, suffix
    return fmt, "fp16" if fmt == "plan" else "fp32"


def find(artifacts: dict[str, Any] | None, fmt: str, precision: str) -> dict[str, Any] | None:
    """The entry of `artifacts` (a member's or the fused graph's) with this format and precision, or None."""
    for key, entry in (artifacts or {}).items():
        if isinstance(entry, dict) and kind(key, entry) == (fmt, precision):
            return entry
    return None


def precisions(artifacts: dict[str, Any] | None, fmt: str) -> list[str]:
    """The precisions `artifacts` holds in format `fmt`."""
    return [kind(k, e)[1] for k, e in (artifacts or {}).items() if isinstance(e, dict) and kind(k, e)[0] == fmt]


@dataclass(frozen=True)
class Member:
    name: str
    arch: str
    temperature: float
    entry: dict[str, Any]

    def artifact(self, key: str, precision: str | None = None) -> dict[str, Any] | None:
        """`artifact("onnx", "int8")`: by format and precision. `artifact("onnx_int8")`: by manifest key
        (what schema 1 callers use; the same entries)."""
        arts = self.entry.get("artifacts", {})
        if precision is not None:
            return find(arts, key, precision)
        return arts.get(key)

    @property
    def tolerances(self) -> dict[str, Any]:
        """Gates each precision passed at export, keyed by precision ({} for schema 1 bundles)."""
        return dict(self.entry.get("tolerances") or {})


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
        if self.manifest.get("schema") not in SCHEMAS:
            raise BundleError(f"{path}: schema {self.manifest.get('schema')!r}, this lenstrt reads "
                              f"{' and '.join(SCHEMAS)}; re-export the bundle with this version")

    @property
    def schema_version(self) -> int:
        return int(str(self.manifest["schema"]).rsplit("/", 1)[1])

    def graphs(self, fused: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
        """The artifact maps that will be served: the fused graph's, or each (selected) member's."""
        if fused:
            return [(self.fused or {}).get("artifacts", {})]
        return [m.entry.get("artifacts", {}) for m in self.members if only is None or m.name in only]

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


def check_engine(engine: dict[str, Any], trt_version: str | None, gpu_name: str | None,
                 compute_capability: str | None, bundle_dir: str | Path = "BUNDLE") -> None:
    """Raise BundleError unless the engine was built by this TensorRT version on this GPU model.

    TensorRT serializes engines for one GPU architecture and one TensorRT release; loading one elsewhere
    fails at best and misbehaves at worst, so we refuse and say how to rebuild."""
    flag = {"fp16": " --fp16", "int8": " --int8"}.get(str(engine.get("precision", "fp16")).split(" ")[0], "")
    rebuild = (f"rebuild it here with `lenstrt export --checkpoint {bundle_dir}/checkpoints{flag} "
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
