"""Warm starts (`lenstrt train --init`): which checkpoint each member starts from, whether it fits, and
what the run records about it.

Everything that can be wrong with a source is checked before the first member trains (an ensemble's
third member must not fail an hour in); when a member starts, the bytes it loads must still be the ones
checked and recorded (sha256)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lenstrt import checkpoint as ck
from lenstrt.errors import ConfigError, LenstrtError

# Builder arguments without weights or effect on the network's shape: a source may differ in these.
_FREE_KWARGS = ("dropout", "grad_checkpointing")


def resolve(spec: str, plan: list[tuple[str, int]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(one source per member of `plan`, notes). `spec` is a checkpoint or a run directory; the k-th
    member of an architecture takes the k-th checkpoint of that architecture, cycling when the run has
    fewer. A source is its checkpoint's metadata (no weights) plus its absolute path and sha256."""
    try:
        paths = ck.resolve(spec)
    except LenstrtError as exc:
        raise ConfigError(f"--init {spec}: {exc}") from exc
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"--init {spec}: {path} not found; pass a checkpoint (.pt) or a `lenstrt train` run "
                              "directory")
        try:
            data = Path(path).read_bytes()
            c = ck.load(path, data=data)
        except (OSError, LenstrtError) as exc:
            raise ConfigError(f"--init {spec}: {exc}") from exc
        meta = {k: v for k, v in c.items() if k not in ("state_dict", "optimizer", "scaler", "history")}
        meta.update(path=str(Path(path).resolve()), sha256=hashlib.sha256(data).hexdigest(),
                    shapes={k: tuple(v.shape) for k, v in c["state_dict"].items()})  # checked without a re-read
        by_arch.setdefault(c["arch"], []).append(meta)
    out, used = [], dict.fromkeys(by_arch, 0)
    for arch, _ in plan:
        if arch not in by_arch:
            raise ConfigError(f"--init {spec}: holds no {arch} checkpoint (it has {', '.join(sorted(by_arch))}); "
                              f"train with --arch {' --arch '.join(sorted(by_arch))} or pass a {arch} run")
        out.append(by_arch[arch][used[arch] % len(by_arch[arch])])
        used[arch] += 1
    notes = [f"--init {spec}: {used[a]} {a} member(s) share {len(by_arch[a])} checkpoint(s): some start from the "
             f"same weights" for a in sorted(by_arch) if used[a] > len(by_arch[a])]
    notes += [f"--init {spec}: {len(by_arch[a]) - used[a]} of its {a} checkpoint(s) unused"
              for a in sorted(by_arch) if used[a] < len(by_arch[a])]
    return out, notes


def check(meta: dict[str, Any], arch: str, kwargs: dict[str, Any], train, preprocess: dict[str, Any]) -> list[str]:
    """Raise one ConfigError naming the file if the source cannot start this member (other bands, size,
    preprocessing, or builder arguments that change the network); return notes for what may differ."""
    where = meta["path"]
    if list(meta["bands"]) != list(train.bands) or int(meta["image_size"]) != int(train.image_size):
        raise ConfigError(f"{where}: trained on bands {','.join(meta['bands'])} at {meta['image_size']} px, the data "
                          f"are {','.join(train.bands)} at {train.image_size} px; --init needs the same bands and size")
    if dict(meta.get("preprocess") or {}) != dict(preprocess):
        raise ConfigError(f"{where}: its preprocessing {meta.get('preprocess')} is not this version's {preprocess}; "
                          "retrain the source with this lenstrt, or train without --init")
    theirs = {k: v for k, v in dict(meta["arch_kwargs"]).items() if k not in _FREE_KWARGS}
    ours = {k: v for k, v in kwargs.items() if k not in _FREE_KWARGS}
    if theirs != ours:
        diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(set(theirs) | set(ours))
                         if theirs.get(k) != ours.get(k))
        raise ConfigError(f"{where}: its {arch} was built otherwise ({diff}); use the training config it was "
                          "trained with")
    notes = []
    if meta.get("survey") != train.survey or meta.get("pixel_scale") != train.pixel_scale:
        def scale(v):
            return f"{v}\"/px" if v else "pixel scale unknown"
        notes.append(f"--init {where}: trained on {meta.get('survey')} ({scale(meta.get('pixel_scale'))}), "
                     f"fine-tuning on {train.survey} ({scale(train.pixel_scale)})")
    return notes


def check_fit(model, meta: dict[str, Any]) -> None:
    """The source's weights fit `model` (the names and shapes load_state_dict's strict mode wants), from
    the shapes `resolve` kept: one ConfigError naming the file otherwise."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = meta["shapes"]
    bad = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
    if bad:
        raise ConfigError(f"{meta['path']}: its {meta['arch']} weights do not fit this config's model ({len(bad)} "
                          f"tensor(s) missing, extra or of another shape: {', '.join(bad[:3])}); use the training "
                          "config it was trained with")


def load_weights(model, meta: dict[str, Any]) -> None:
    """Copy the source's weights into a fresh (CPU) model; a misfit is one ConfigError naming the file."""
    try:
        data = Path(meta["path"]).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--init: {meta['path']} cannot be read ({exc.strerror}); it was there when the run "
                          "started") from exc
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ConfigError(f"{meta['path']}: changed since this run checked it (another run writing it?); start "
                          "again from a finished source")
    state = ck.load(meta["path"], data=data)["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{meta['path']}: its {meta['arch']} weights do not fit this config's model "
                          f"({str(exc).splitlines()[0]}); use the training config it was trained with") from exc


def record(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint and ensemble.json keep about the source: enough to find and verify it."""
    if meta is None:
        return None
    return {k: meta.get(k) for k in ("path", "sha256", "arch", "step", "survey", "data_hash")}


def same_lineage(last: Path, had: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
    """A resumed member continues what it started: from the same source (same path, or the same bytes
    moved elsewhere), or from random weights; anything else is one ConfigError naming its last.pt."""
    if had is None and now is None:
        return
    if had is None:
        raise ConfigError(f"{last}: this member started from random weights; resume without --init")
    if now is None:
        raise ConfigError(f"{last}: this member started from --init {had['path']}; resume with that --init "
                          "(it is not read again)")
    if now.get("path") != had.get("path") and now.get("sha256") != had.get("sha256"):
        raise ConfigError(f"{last}: this member started from --init {had['path']}, not {now['path']}; resume "
                          "with that --init")
