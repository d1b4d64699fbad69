"""The checkpoint contract. Training writes it; evaluate, export and the torch backend read it.

A plain dict saved with torch.save and loadable with `weights_only=True` (tensors and Python
primitives only), carrying everything needed to rebuild, evaluate, resume and export the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lenstrt.errors import CheckpointError
from lenstrt.io import atomic_path

SCHEMA = "lenstrt-checkpoint/1"
REQUIRED = ("schema", "state_dict", "arch", "arch_kwargs", "bands", "image_size", "preprocess", "temperature")


def save(path: str | Path, ckpt: dict[str, Any]) -> Path:
    import torch

    ckpt = {"schema": SCHEMA, **ckpt}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load(path: str | Path, data: bytes | None = None) -> dict[str, Any]:
    """`data`: the file's bytes, already read (and verified against a manifest) by the caller."""
    import io

    import torch

    p = Path(path)
    if data is None and not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; pass a .pt file or a run directory from `lenstrt train`")
    try:
        ckpt = torch.load(io.BytesIO(data) if data is not None else p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p}: not a loadable lenstrt checkpoint ({type(exc).__name__}); "
                              "re-create it with `lenstrt train`") from exc
    missing = [k for k in REQUIRED if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED)
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {', '.join(missing)}; it was not written by `lenstrt train`")
    return ckpt


def build_model(ckpt: dict[str, Any]):
    """The model of a checkpoint, weights loaded, in eval mode."""
    from lenstrt.models import create_model

    model = create_model(ckpt["arch"], len(ckpt["bands"]), ckpt["image_size"], **ckpt["arch_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def member_names(paths: list[Path]) -> list[str]:
    """One name per checkpoint (its member directory, or the file's stem), made unique: two runs' members of
    one seed share a directory name (`resnet18_half-s1`), and an ensemble of both still needs two."""
    names: list[str] = []
    for p in paths:
        base = p.parent.name if p.name in ("best.pt", "last.pt") else p.stem
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def resolve(path: str | Path) -> list[Path]:
    """A checkpoint file, or a run directory -> its members' best checkpoints (ensemble order)."""
    import json

    p = Path(path)
    if p.is_dir():
        manifest = p / "ensemble.json"
        if manifest.is_file():
            members = json.loads(manifest.read_text())["members"]
            return [p / m["checkpoint"] for m in members]
        found = sorted(p.glob("**/best.pt"))
        if found:
            return found
        raise CheckpointError(f"{p}: no ensemble.json or best.pt inside; is this a `lenstrt train` run directory?")
    return [p]
